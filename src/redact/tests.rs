use super::*;

#[test]
fn names_follow_rclones_sensitive_options() {
    for n in [
        "pass",
        "password",
        "password2",
        "secret_access_key",
        "access_key_id",
        "session_token",
        "token",
        "client_secret",
        "client_id",
        "key",
        "sas_url",
        "account",
        "user",
        "service_account_credentials",
        "sse_customer_key",
        "key_file_pass",
        "library_key",
        "--sftp-pass",
        "--s3-secret-access-key",
        "--b2-key",
        "--drive-token",
        "--webdav-bearer-token",
        "--azureblob-sas-url",
        "--onedrive-client-secret",
        "--rc-pass",
        "--header",
    ] {
        assert!(is_sensitive(n), "{n} should be sensitive");
    }
    for n in [
        "url",
        "host",
        "port",
        "provider",
        "region",
        "endpoint",
        "--b2-chunk-size",
        "--bwlimit",
        "--transfers",
        "--sftp-key-file",
        "--sftp-ask-password",
        "--s3-env-auth",
        "--user-agent",
        "--drive-keep-revision-forever",
        "bypass",
    ] {
        assert!(!is_sensitive(n), "{n} should not be sensitive");
    }
}

#[test]
fn connection_string_parameters_are_masked() {
    assert_eq!(
        remote(":s3,provider=AWS,access_key_id=AKIA1,secret_access_key=abc/def:bucket/x"),
        ":s3,provider=AWS,access_key_id=***,secret_access_key=***:bucket/x"
    );
    assert_eq!(
        remote(":webdav,url='http://127.0.0.1:1',pass='a,b:''c':"),
        ":webdav,url='http://127.0.0.1:1',pass=***:"
    );
    assert_eq!(
        remote("myremote,pass=\"x y\":path"),
        "myremote,pass=***:path"
    );
    assert_eq!(remote("b2:bucket/offsite"), "b2:bucket/offsite");
    assert_eq!(remote("/mnt/usb/offsite"), "/mnt/usb/offsite");
    assert_eq!(remote(":local:/mnt/usb"), ":local:/mnt/usb");
    // A nested remote's parameters are masked too.
    assert_eq!(
        remote(":crypt,remote=':sftp,host=h,pass=P:dir',password=Q:"),
        ":crypt,remote=':sftp,host=h,pass=***:dir',password=***:"
    );
}

#[test]
fn url_passwords_are_masked() {
    assert_eq!(
        remote(":webdav,url='https://bob:hunter2@dav.example/x':"),
        ":webdav,url='https://bob:***@dav.example/x':"
    );
    assert_eq!(
        text("GET http://u:p@h/x failed"),
        "GET http://u:***@h/x failed"
    );
    assert_eq!(text("see http://h:8080/x"), "see http://h:8080/x");
}

#[test]
fn flag_values_are_masked_in_both_forms() {
    let f = flags(&[
        "--sftp-pass",
        "S1",
        "--s3-secret-access-key=S2",
        "--b2-chunk-size",
        "96M",
        "--sftp-ask-password",
        "--transfers",
        "4",
    ]);
    assert_eq!(
        f,
        [
            "--sftp-pass",
            "***",
            "--s3-secret-access-key=***",
            "--b2-chunk-size",
            "96M",
            "--sftp-ask-password",
            "--transfers",
            "4"
        ]
    );
    assert_eq!(
        text("rclone --sftp-pass S1 --drive-token='{\"a\": 1}' --bwlimit 1M cat x"),
        "rclone --sftp-pass *** --drive-token=*** --bwlimit 1M cat x"
    );
}

#[test]
fn secrets_are_found_as_written_and_unquoted() {
    let s = secrets_of(
        ":sftp,host=h,pass='p''q',user=bob:",
        &["--sftp-key-file-pass", "KFP", "--ftp-pass=FP", "--x", "y"],
    );
    for want in ["'p''q'", "p'q", "KFP", "FP"] {
        assert!(s.iter().any(|x| x == want), "{want:?} not in {s:?}");
    }
    // A user name is masked where it stands, not replaced as a word everywhere.
    assert!(
        !s.iter().any(|x| x == "h" || x == "y" || x == "bob"),
        "{s:?}"
    );
}

#[test]
fn short_secrets_and_user_names_do_not_mask_ordinary_words() {
    register(
        ":sftp,host=h,user=backup,pass=abc:",
        &["--sftp-pass", "xyz"],
    );
    let doc = r#"{"backup_id": "20261121T020000Z-full", "state": "complete", "abc": 1}"#;
    assert_eq!(text(doc), doc);
    assert_eq!(
        text(":sftp,host=h,user=backup,pass=abc:"),
        ":sftp,host=h,user=***,pass=***:"
    );
}

#[test]
fn registered_secrets_are_replaced_wherever_they_appear() {
    register(
        ":sftp,host=h,pass=PLANTEDxyz:",
        &["--ftp-pass", "PLANTED2xyz"],
    );
    let t = text("error: auth failed for PLANTEDxyz (and \"PLANTED2xyz\") on line 3");
    assert!(!t.contains("PLANTED"), "{t}");
    assert!(t.contains("auth failed") && t.contains("line 3"), "{t}");
}

#[test]
fn text_without_secrets_is_unchanged() {
    for s in [
        "provider p1: list testhost/d: rclone exited with status 3: directory not found",
        "--- a/b\n+++ b/c",
        "backup 20261121T020000Z-full, 3 shards, 1,024 bytes",
        "flags: --transfers 4 --checkers=8",
    ] {
        assert_eq!(text(s), s);
    }
}
