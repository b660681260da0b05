//! `restore --output FILE` and its target safety: an existing FILE needs --force, a directory
//! or a symlink is refused before anything is downloaded, a planted `FILE.partial` symlink is
//! never followed, `/dev/stdout` and `-` mean --stdout, `--piece-size` has a floor; a btrfs
//! target's partial subvolume is not taken for a received snapshot; a command source's
//! arguments stay out of the log unless -v.

use crate::harness::*;
use offsite::receiver::leftover_partials;
use std::path::PathBuf;
use std::process::Stdio;

const DS: &str = "media";

fn out_path(env: &Env) -> PathBuf {
    env.path().join("restored.bin")
}

/// The rclone calls the mock logged that download something.
fn downloads(env: &Env) -> Vec<String> {
    env.mock_log()
        .into_iter()
        .filter(|l| l.starts_with("cat") || l.starts_with("lsjson"))
        .collect()
}

#[test]
fn an_existing_file_or_a_directory_is_refused_before_anything_is_downloaded() {
    let (mut env, data) = backed_up(1, DS, 11);
    env.use_mock_rclone();
    let out = out_path(&env);
    std::fs::write(&out, b"keep me").unwrap();
    let o = out.to_str().unwrap();
    let err = env
        .offsite(&["restore", DS, "--output", o])
        .assert_exit(2)
        .stderr_text();
    assert!(err.contains("already exists; pass --force"), "{err}");
    assert_eq!(std::fs::read(&out).unwrap(), b"keep me");
    let dir = env.path().join("adir");
    std::fs::create_dir(&dir).unwrap();
    let err = env
        .offsite(&["restore", DS, "--output", dir.to_str().unwrap(), "--force"])
        .assert_exit(2)
        .stderr_text();
    assert!(err.contains("is a directory"), "{err}");
    let link = env.path().join("link.bin");
    std::os::unix::fs::symlink(&out, &link).unwrap();
    let err = env
        .offsite(&["restore", DS, "--output", link.to_str().unwrap(), "--force"])
        .assert_exit(2)
        .stderr_text();
    assert!(err.contains("symbolic link"), "{err}");
    assert_eq!(
        downloads(&env),
        Vec::<String>::new(),
        "nothing is listed or downloaded"
    );

    env.offsite(&["restore", DS, "--output", o, "--force"])
        .assert_exit(0);
    assert_same_bytes("--force", &std::fs::read(&out).unwrap(), &data);
    assert!(leftover_partials(&out).is_empty());
    // A device is written in place, without --force.
    env.offsite(&["restore", DS, "--output", "/dev/null"])
        .assert_exit(0);
}

#[test]
fn a_symlink_planted_at_the_partial_name_is_never_followed() {
    let (env, data) = backed_up(1, DS, 12);
    let out = out_path(&env);
    let victim = env.path().join("victim");
    std::fs::write(&victim, b"precious").unwrap();
    std::os::unix::fs::symlink(&victim, env.path().join("restored.bin.partial")).unwrap();
    env.offsite(&["restore", DS, "--output", out.to_str().unwrap()])
        .assert_exit(0);
    assert_eq!(std::fs::read(&victim).unwrap(), b"precious");
    assert_same_bytes("restored", &std::fs::read(&out).unwrap(), &data);
    assert!(leftover_partials(&out).is_empty());
}

#[test]
fn output_dev_stdout_and_dash_mean_stdout() {
    let (env, data) = backed_up(1, DS, 13);
    let got = env
        .offsite(&["restore", DS, "--output", "-"])
        .assert_exit(0)
        .stdout
        .clone();
    assert_same_bytes("--output -", &got, &data);

    let file = env.path().join("redirected.bin");
    let mut c = env.command(&["restore", DS, "--output", "/dev/stdout"]);
    c.stdout(std::fs::File::create(&file).unwrap())
        .stderr(Stdio::piped());
    let run = c.output().expect("run offsite");
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    assert_same_bytes("> file", &std::fs::read(&file).unwrap(), &data);
    let meta = std::fs::symlink_metadata("/dev/stdout").unwrap();
    assert!(meta.file_type().is_symlink(), "/dev/stdout was replaced");
}

#[test]
fn a_piece_size_below_the_floor_is_a_usage_error() {
    let (env, _) = backed_up(1, DS, 14);
    for size in ["0", "1", "64KiB"] {
        let err = env
            .offsite(&["restore", DS, "--stdout", "--piece-size", size])
            .assert_exit(2)
            .stderr_text();
        assert!(
            err.contains("--piece-size") && err.contains("too small"),
            "{err}"
        );
    }
}

#[test]
fn a_command_source_is_logged_by_its_program_unless_verbose() {
    let backup = |verbose: &[&str]| {
        let mut env = Env::new(1);
        let src = env.path().join("src.bin");
        write_pseudo_random(&src, 15, 1000);
        let cmd = format!("DBPASS=PLANTEDARG cat {} # PLANTEDARG", src.display());
        env.command_dataset(DS, &cmd);
        let args: Vec<&str> = verbose
            .iter()
            .copied()
            .chain(["backup", "--once"])
            .collect();
        env.offsite(&args).assert_exit(0).stderr_text()
    };
    let err = backup(&[]);
    assert!(!err.contains("PLANTEDARG"), "{err}");
    assert!(err.contains("command cat"), "{err}");
    let err = backup(&["-v"]);
    assert!(
        err.contains("PLANTEDARG"),
        "-v shows the whole command: {err}"
    );
}

#[test]
fn a_partial_btrfs_subvolume_is_not_taken_for_the_snapshot() {
    let mut env = Env::new(1);
    let fs = BtrfsMount::new(env.path());
    let vol = fs.subvolume("vol");
    std::fs::write(vol.join("a.txt"), "hello\n").unwrap();
    env.btrfs_dataset("home", &vol, Some(&fs.path().join("snaps")));
    env.offsite(&["backup", "--once"]).assert_exit(0);
    let target = fs.path().join("restored");
    std::fs::create_dir(&target).unwrap();
    let t = target.to_str().unwrap();
    env.offsite(&["restore", "home", "--target", t])
        .assert_exit(0);
    let received: Vec<PathBuf> = std::fs::read_dir(&target)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(received.len(), 1, "{received:?}");
    let snap = received[0].to_str().unwrap().to_string();
    // What an interrupted receive leaves: a writable subvolume under the snapshot's name.
    run("btrfs", &["subvolume", "delete", &snap]);
    fs.subvolume(&format!(
        "restored/{}",
        received[0].file_name().unwrap().to_str().unwrap()
    ));
    let err = env
        .offsite(&["restore", "home", "--target", t])
        .assert_exit(2)
        .stderr_text();
    assert!(
        err.contains("without a received UUID") && err.contains("btrfs subvolume delete"),
        "{err}"
    );
    assert!(!err.contains("already holds"), "{err}");
    run("btrfs", &["subvolume", "delete", &snap]);
    let json = env
        .offsite(&["--json", "restore", "home", "--target", t])
        .assert_exit(0)
        .json();
    assert_eq!(json["applied"].as_array().unwrap().len(), 1, "{json}");
    assert!(BtrfsMount::is_readonly(&received[0]));
    assert_eq!(
        std::fs::read_to_string(received[0].join("a.txt")).unwrap(),
        "hello\n"
    );
}
