//! Command-line arguments (INTERFACE.md, "Commands"), including the seed tool's aliases.

use clap::{Args, Parser, Subcommand};
use std::ffi::OsString;
use std::path::PathBuf;

/// The end of `offsite --help`: what each exit code means, and two first commands.
const AFTER_HELP: &str = "\
Exit codes:
  0    done (backup/sync/status/verify: every provider holds what it should)
  1    failed; what was done is kept and a re-run resumes
  2    bad usage or invalid configuration; nothing was touched
  3    done, with gaps: a provider misses something, a stream was empty or a dataset is stale
  4    another offsite holds the lock for this dataset
  130  interrupted (SIGINT, SIGTERM, SIGHUP)

Examples:
  offsite init && offsite check            write a commented config, then check it
  offsite backup --once                    back up every dataset now, due or not
  offsite --host nas1 restore media --target tank/media-restored
                                           restore nas1's newest backup of media into zfs

Reference: man offsite, /usr/share/doc/offsite/docs/ (docs/ in the source).";

#[derive(Debug, Parser)]
#[command(
    name = "offsite",
    version,
    about = "Offsite copies of ZFS/btrfs datasets and command output on several rclone remotes",
    after_help = AFTER_HELP
)]
pub struct Cli {
    /// Config file (else $OFFSITE_CONFIG, /etc/offsite/offsite.toml, ~/.config/offsite/offsite.toml).
    #[arg(long, global = true, value_name = "PATH")]
    pub config: Option<PathBuf>,
    /// Work on another machine's backups (the host folder on the remotes).
    #[arg(long, global = true, value_name = "NAME")]
    pub host: Option<String>,
    /// More log output (-vv for trace).
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,
    /// Print nothing but errors.
    #[arg(short, long, global = true)]
    pub quiet: bool,
    /// One JSON document on stdout.
    #[arg(long, global = true)]
    pub json: bool,
    /// No progress bars or progress log lines.
    #[arg(long, global = true)]
    pub no_progress: bool,
    /// When stderr is not a terminal: log a progress line this often (seconds, or 30s, 5m;
    /// 0: none). The closing summary is logged either way.
    #[arg(
        long,
        global = true,
        value_name = "SECS",
        env = "OFFSITE_PROGRESS_INTERVAL",
        default_value = "60",
        value_parser = crate::progress::parse_interval
    )]
    pub progress_interval: std::time::Duration,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Back up the datasets that are due (or all with --once).
    Backup(BackupArgs),
    /// Restore a backup chain into zfs, btrfs, a file or stdout.
    Restore(RestoreArgs),
    /// Backups on the providers, newest last.
    List {
        /// Only this dataset (its name in the config or on the providers).
        dataset: Option<String>,
        /// Every host's backups, summarized per host (as `offsite hosts`).
        #[arg(long, conflicts_with = "dataset")]
        all_hosts: bool,
    },
    /// The hosts whose backups the providers hold: where to restore from on a new machine.
    Hosts,
    /// Backups x providers: complete, missing or bad shards.
    Status {
        /// Only this dataset (its name in the config or on the providers).
        dataset: Option<String>,
    },
    /// Check that providers hold what the manifests say (--deep: download and hash).
    Verify(VerifyArgs),
    /// Fill every provider's gaps from providers that hold a good copy.
    Sync(SyncArgs),
    /// Apply retention on providers and local snapshots.
    Prune {
        /// Say what would be deleted, delete nothing.
        #[arg(long)]
        dry_run: bool,
    },
    /// Each provider: reachable? free space? object count.
    Providers,
    /// Check the config and every provider's rclone setup (remote known, flags accepted,
    /// writable with a probe object it deletes); exit 2 with one line per problem.
    Check,
    /// Write a new age identity (mode 0600) and print its recipient (`age1...`) for
    /// `[encryption] recipients`.
    Keygen {
        /// Write the identity to FILE (refused if it exists) instead of stdout.
        #[arg(long, value_name = "FILE")]
        output: Option<PathBuf>,
    },
    /// Write a commented offsite.toml and an example provider into the config directory
    /// (--config's, else $OFFSITE_CONFIG's, else /etc/offsite as root, ~/.config/offsite
    /// otherwise); never overwrites a file.
    Init,
    /// Print the shell completion script for SHELL on stdout.
    Completions {
        /// The shell to complete for.
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Print the man page (roff) on stdout: `offsite man | man -l -`.
    Man,
}

#[derive(Debug, Args)]
pub struct BackupArgs {
    /// Datasets to back up (default: all).
    pub datasets: Vec<String>,
    /// Run now, whether due or not.
    #[arg(long)]
    pub once: bool,
    /// Force a full backup.
    #[arg(long)]
    pub full: bool,
    /// Say what would be done, do nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Discard an unfinished backup instead of resuming it, and start afresh.
    #[arg(long)]
    pub restart: bool,
}

#[derive(Debug, Args)]
pub struct RestoreArgs {
    /// The dataset's name on the providers.
    pub dataset: String,
    /// Restore this backup id (default: the newest).
    #[arg(long, conflicts_with = "snapshot")]
    pub backup: Option<String>,
    /// Restore the backup of this snapshot.
    #[arg(long)]
    pub snapshot: Option<String>,
    /// Prefer this provider.
    #[arg(long, value_name = "PROVIDER")]
    pub from: Option<String>,
    /// zfs dataset or btrfs directory to receive into.
    #[arg(long, required_unless_present_any = ["output", "stdout"], conflicts_with_all = ["output", "stdout"])]
    pub target: Option<String>,
    /// With --target on zfs: `zfs receive -F`; with --output: replace an existing FILE.
    #[arg(long, conflicts_with = "stdout")]
    pub force: bool,
    /// Write one backup's raw stream to FILE (refused if FILE exists, unless --force; a device
    /// or FIFO is written in place; `-`, /dev/stdout and /dev/fd/1 mean --stdout).
    #[arg(long, value_name = "FILE", conflicts_with = "stdout")]
    pub output: Option<PathBuf>,
    /// Write one backup's raw stream to stdout.
    #[arg(long)]
    pub stdout: bool,
    /// Fetch each shard in pieces of SIZE, read from several providers at once (default:
    /// sized by the providers' measured rates; a shard no larger than SIZE is fetched whole).
    /// At least 256KiB.
    #[arg(long, value_name = "SIZE", value_parser = crate::config::units::parse_size)]
    pub piece_size: Option<u64>,
    /// Decrypt with the age identity in FILE (overrides `[encryption] identity_file`); a
    /// passphrase-protected file is asked for on the terminal or read from the file named by
    /// $OFFSITE_PASSPHRASE_FILE.
    #[arg(long, value_name = "FILE")]
    pub identity: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct VerifyArgs {
    /// Only this dataset (default: all).
    pub dataset: Option<String>,
    /// Download every shard and check its SHA-256.
    #[arg(long)]
    pub deep: bool,
    /// Only this provider.
    #[arg(long, value_name = "NAME")]
    pub provider: Option<String>,
    /// With --deep (implied): also decrypt and decompress every shard and check its
    /// plaintext SHA-256 (needs the identity).
    #[arg(long)]
    pub decrypt: bool,
    /// The age identity for --decrypt (overrides `[encryption] identity_file`).
    #[arg(long, value_name = "FILE", requires = "decrypt")]
    pub identity: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct SyncArgs {
    /// Datasets to sync (default: all on the providers).
    pub datasets: Vec<String>,
    /// List what would be copied, copy nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Only bring this provider up to date.
    #[arg(long, value_name = "NAME", conflicts_with = "migrate")]
    pub repair_provider: Option<String>,
    /// Copy everything this provider holds for this host to --to.
    #[arg(long, value_name = "FROM", requires = "to")]
    pub migrate: Option<String>,
    /// Destination of --migrate.
    #[arg(long, value_name = "TO", requires = "migrate")]
    pub to: Option<String>,
    /// With --migrate: delete FROM's copy once TO is verified.
    #[arg(long, requires = "migrate")]
    pub remove_source: bool,
    /// Download and SHA-256 every shard on every provider first: corrupt copies (right size,
    /// wrong content) are then replaced, and never used as a source (not even server-side).
    /// Without it sync trusts sizes, and checks content only where it passes through offsite.
    #[arg(long)]
    pub deep: bool,
}

const SUBCOMMANDS: [&str; 15] = [
    "backup",
    "restore",
    "list",
    "status",
    "verify",
    "sync",
    "prune",
    "providers",
    "hosts",
    "check",
    "keygen",
    "init",
    "completions",
    "man",
    "help",
];

/// Rewrites the seed tool's flags into `sync` forms: `--sync-providers` is `sync`,
/// `--repair-provider NAME` is `sync --repair-provider NAME`, `--migrate FROM --to TO` is
/// `sync --migrate FROM --to TO`.
pub fn rewrite_aliases(args: Vec<OsString>) -> Vec<OsString> {
    let has_subcommand = args
        .iter()
        .skip(1)
        .any(|a| SUBCOMMANDS.contains(&a.to_string_lossy().as_ref()));
    if has_subcommand {
        return args;
    }
    let mut out = Vec::with_capacity(args.len() + 1);
    let mut inserted = false;
    for a in args {
        let s = a.to_string_lossy();
        if !inserted && s == "--sync-providers" {
            out.push("sync".into());
            inserted = true;
            continue;
        }
        if !inserted
            && (s == "--repair-provider"
                || s.starts_with("--repair-provider=")
                || s == "--migrate"
                || s.starts_with("--migrate="))
        {
            out.push("sync".into());
            inserted = true;
        }
        out.push(a);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Cli {
        Cli::try_parse_from(rewrite_aliases(args.iter().map(OsString::from).collect())).unwrap()
    }

    #[test]
    fn seed_tool_aliases_map_to_sync() {
        let c = parse(&["offsite", "--config", "x.toml", "--sync-providers"]);
        assert!(
            matches!(c.command, Command::Sync(ref s) if s.repair_provider.is_none() && s.migrate.is_none())
        );
        let c = parse(&["offsite", "--repair-provider", "b2"]);
        assert!(
            matches!(c.command, Command::Sync(ref s) if s.repair_provider.as_deref() == Some("b2"))
        );
        let c = parse(&["offsite", "--migrate", "b2", "--to", "s3"]);
        assert!(
            matches!(c.command, Command::Sync(ref s) if s.migrate.as_deref() == Some("b2") && s.to.as_deref() == Some("s3"))
        );
    }

    /// Every argument and flag of every command says what it is for in `--help`.
    #[test]
    fn progress_is_logged_once_a_minute_unless_told_otherwise() {
        let c = parse(&["offsite", "status"]);
        assert_eq!(c.progress_interval, std::time::Duration::from_secs(60));
        let c = parse(&["offsite", "backup", "--progress-interval", "5m"]);
        assert_eq!(c.progress_interval, std::time::Duration::from_secs(300));
    }

    #[test]
    fn every_argument_has_a_description() {
        use clap::CommandFactory;
        fn walk(cmd: &clap::Command, path: &str, missing: &mut Vec<String>) {
            for arg in cmd.get_arguments() {
                let id = arg.get_id().as_str();
                if id != "help" && id != "version" && arg.get_help().is_none() {
                    missing.push(format!("{path} {id}"));
                }
            }
            for sub in cmd.get_subcommands() {
                if sub.get_about().is_none() {
                    missing.push(format!("{path} {} (the command)", sub.get_name()));
                }
                walk(sub, &format!("{path} {}", sub.get_name()), missing);
            }
        }
        let mut missing = Vec::new();
        walk(&Cli::command(), "offsite", &mut missing);
        assert!(missing.is_empty(), "no description: {missing:?}");
    }

    #[test]
    fn every_subcommand_is_known_to_the_alias_rewriter() {
        use clap::CommandFactory;
        for sub in Cli::command().get_subcommands() {
            assert!(SUBCOMMANDS.contains(&sub.get_name()), "{}", sub.get_name());
        }
    }

    #[test]
    fn help_ends_with_the_exit_codes_and_examples() {
        use clap::CommandFactory;
        let help = Cli::command().render_long_help().to_string();
        for needle in ["Exit codes:", "130", "Examples:", "offsite backup --once"] {
            assert!(help.contains(needle), "{needle} in {help}");
        }
    }

    #[test]
    fn restore_needs_exactly_one_destination() {
        let base = ["offsite", "restore", "media"];
        assert!(Cli::try_parse_from(base).is_err());
        assert!(Cli::try_parse_from([&base[..], &["--target", "t", "--stdout"]].concat()).is_err());
        assert!(Cli::try_parse_from([&base[..], &["--output", "f"]].concat()).is_ok());
    }
}
