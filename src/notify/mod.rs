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
    urls: Vec<(String, Vec<String>)>,
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
            Command::Backup(a) if !a.dry_run => ("backup", a.datasets.clone()),
            Command::Sync(a) if !a.dry_run => ("sync", a.datasets.clone()),
            Command::Verify(a) => ("verify", a.dataset.iter().cloned().collect()),
            Command::Prune { dry_run: false } => ("prune", Vec::new()),
            Command::Status { dataset } => ("status", dataset.iter().cloned().collect()),
            _ => return None, // list, restore, a dry run...: nobody monitors those
        };
        let datasets = if named.is_empty() {
            cfg.datasets.iter().map(|d| d.name.clone()).collect()
        } else {
            named
        };
        let mut urls: Vec<(String, Vec<String>)> = Vec::new();
        if name == "backup" {
            // Per dataset: its own URL, else the top-level one; each URL pinged once, about
            // the datasets it stands for.
            for d in &datasets {
                let own = cfg.dataset(d).and_then(|d| d.notify_url.clone());
                let Some(u) = own.or_else(|| cfg.monitor.notify_url.clone()) else {
                    continue;
                };
                match urls.iter_mut().find(|(x, _)| *x == u) {
                    Some((_, ds)) => ds.push(d.clone()),
                    None => urls.push((u, vec![d.clone()])),
                }
            }
        } else if name != "status" {
            if let Some(u) = &cfg.monitor.notify_url {
                urls.push((u.clone(), datasets.clone()));
            }
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
        for (url, _) in &self.urls {
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
                succeeded: &self.succeeded(ended, observed),
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
        for (url, datasets) in &self.urls {
            // A backup's URL reports on its own datasets; a failure elsewhere is not theirs.
            let exit = match self.command {
                "backup" => observed.exit_of(datasets).unwrap_or(ended.exit),
                _ => ended.exit,
            };
            if exit == code::OK {
                ping::send(url.clone(), String::new()).await;
            } else {
                ping::send(format!("{url}/fail"), ping::tail(&ended.message)).await;
            }
        }
        if let Some(cmd) = &self.monitor.notify_command {
            command::run(cmd, &self.env(ended)).await;
        }
    }

    /// The datasets whose backup ended with exit 0 in this run (a failure of another dataset
    /// does not hold back their last-success time).
    fn succeeded(&self, ended: &Ended, observed: &observed::Observed) -> Vec<String> {
        if self.command != "backup" {
            return Vec::new();
        }
        self.datasets
            .iter()
            .filter(|d| match observed.dataset_exit.get(*d) {
                Some(exit) => *exit == code::OK,
                None => ended.exit == code::OK,
            })
            .cloned()
            .collect()
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
