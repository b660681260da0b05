//! Who hears how a run ended: the Prometheus `metrics_file`, the healthchecks-style
//! `notify_url` pings and the `notify_command` hook. Called once around each command by
//! [`crate::cmd::run`]; nothing here can change a run's exit code or hang it: every failure is
//! a warning in the log.

pub mod command;
pub mod metrics;
pub mod observed;
pub mod ping;

use crate::cli::Command;
use crate::cmd::Outcome;
use crate::config::Config;
use crate::error::code;

/// One watched run: its command and the datasets it is about.
pub struct Watch {
    /// `backup`, `sync`, `verify`, `prune` or `status`.
    pub command: &'static str,
    /// The datasets named on the command line, else every configured one.
    pub datasets: Vec<String>,
    host: String,
    monitor: crate::config::Monitor,
    /// The ping URLs, each with the datasets it reports on.
    urls: Vec<String>,
}

/// How a run ended, as the process will exit.
pub struct Ended {
    pub exit: i32,
    /// The final error or gaps message; empty on success.
    pub message: String,
}

impl Ended {
    pub fn of(result: &anyhow::Result<Outcome>) -> Ended {
        match result {
            Ok(Outcome::Done) => Ended {
                exit: code::OK,
                message: String::new(),
            },
            Ok(Outcome::Gaps(m)) => Ended {
                exit: code::GAPS,
                message: m.clone(),
            },
            Err(e) if crate::error::is_broken_pipe(e) => Ended {
                exit: code::OK,
                message: String::new(),
            },
            Err(e) => Ended {
                exit: crate::error::exit_code(e),
                message: format!("{e:#}"),
            },
        }
    }
}

impl Watch {
    /// The watch for `command`, or `None` for the commands nobody monitors (list, restore...).
    pub fn of(cfg: &Config, command: &Command) -> Option<Watch> {
        let (name, named): (&'static str, Vec<String>) = match command {
            Command::Backup(a) => ("backup", a.datasets.clone()),
            Command::Sync(a) => ("sync", a.datasets.clone()),
            Command::Verify(a) => ("verify", a.dataset.iter().cloned().collect()),
            Command::Prune { .. } => ("prune", Vec::new()),
            Command::Status { dataset } => ("status", dataset.iter().cloned().collect()),
            _ => return None,
        };
        let datasets = if named.is_empty() {
            cfg.datasets.iter().map(|d| d.name.clone()).collect()
        } else {
            named
        };
        let mut urls: Vec<String> = Vec::new();
        if name == "backup" {
            // Per dataset: its own URL, else the top-level one; each URL pinged once.
            for d in &datasets {
                let own = cfg.dataset(d).and_then(|d| d.notify_url.clone());
                if let Some(u) = own.or_else(|| cfg.monitor.notify_url.clone()) {
                    if !urls.contains(&u) {
                        urls.push(u);
                    }
                }
            }
        } else if name != "status" {
            urls.extend(cfg.monitor.notify_url.clone());
        }
        Some(Watch {
            command: name,
            datasets,
            host: cfg.host.clone(),
            monitor: cfg.monitor.clone(),
            urls,
        })
    }

    /// Before the run: `URL/start` on every ping URL.
    pub async fn started(&self) {
        for url in &self.urls {
            ping::send(format!("{url}/start"), String::new()).await;
        }
    }

    /// After the run: the metrics file, the pings (`URL` or `URL/fail`), the hook command.
    pub async fn ended(&self, ended: &Ended, observed: &observed::Observed) {
        if let Some(path) = &self.monitor.metrics_file {
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs());
            let run = metrics::Run {
                host: &self.host,
                command: self.command,
                exit: ended.exit,
                succeeded: &self.succeeded(ended),
                observed,
                now,
            };
            if let Err(e) = metrics::update(path, &run) {
                tracing::warn!("cannot write metrics_file {}: {e:#}", path.display());
            }
        }
        if self.command == "status" {
            return;
        }
        for url in &self.urls {
            if ended.exit == code::OK {
                ping::send(url.clone(), String::new()).await;
            } else {
                ping::send(format!("{url}/fail"), ping::tail(&ended.message)).await;
            }
        }
        if let Some(cmd) = &self.monitor.notify_command {
            command::run(cmd, &self.env(ended)).await;
        }
    }

    /// The datasets a successful backup stored (none when the run failed).
    fn succeeded(&self, ended: &Ended) -> Vec<String> {
        if self.command == "backup" && ended.exit == code::OK {
            self.datasets.clone()
        } else {
            Vec::new()
        }
    }

    /// The `OFFSITE_*` variables of the hook command.
    fn env(&self, ended: &Ended) -> Vec<(&'static str, String)> {
        vec![
            ("OFFSITE_EVENT", self.command.to_string()),
            ("OFFSITE_EXIT", ended.exit.to_string()),
            (
                "OFFSITE_STATUS",
                if ended.exit == code::OK {
                    "success"
                } else {
                    "failure"
                }
                .into(),
            ),
            ("OFFSITE_DATASET", self.datasets.join(",")),
            ("OFFSITE_MESSAGE", ping::tail(&ended.message)),
            ("OFFSITE_HOST", self.host.clone()),
        ]
    }
}
