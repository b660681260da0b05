//! offsite's integration tests: one test binary (`cargo test --test integration`) with a shared
//! harness. Each module covers one area through the real `offsite` binary, real rclone (or
//! `tests/mock_rclone` for faults), zfs-fuse and loop-mounted btrfs.

mod harness;

mod backup;
mod backup_faults;
mod chains;
mod check;
mod config;
mod debug;
mod docs;
mod encryption;
mod encryption_faults;
mod encryption_keys;
mod erasure;
mod first_hour;
mod notify;
mod prune;
mod restore;
mod restore_output;
mod resume;
mod resume_changes;
mod resume_policy;
mod resume_provider_down;
mod resume_signals;
mod secrets;
mod signals;
mod status;
mod sync;
mod systemd;
mod watch;
