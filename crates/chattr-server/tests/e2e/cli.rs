//! The terminal client, run as the real `chattr` binary against a test server.

use std::process::Stdio;

use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::Command;

use crate::harness::*;

fn chattr(srv: &TestServer, profile: &std::path::Path, args: &[&str]) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_chattr"));
    cmd.arg("chat")
        .args(args)
        .env("CHATTR_SERVER_URL", &srv.url)
        .env("CHATTR_PROFILE", profile)
        .env("CHATTR_PASSWORD", PASSWORD)
        .stdin(Stdio::null())
        .kill_on_drop(true);
    cmd
}

async fn run_ok(srv: &TestServer, profile: &std::path::Path, args: &[&str]) -> String {
    let out = within(chattr(srv, profile, args).output()).await.expect("runs");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "chattr chat {args:?} failed: {stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

#[tokio::test]
async fn chat_from_the_terminal() {
    let srv = TestServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let profile = dir.path().join("profile.json");
    let me = name("cli");
    assert!(run_ok(&srv, &profile, &["signup", &me]).await.contains(&format!("signed up as {me}")));
    let bob = srv.user("bob").await;
    let bob_name = bob.me().unwrap().username;
    let conv_id = run_ok(&srv, &profile, &["dm", &bob_name]).await.trim().to_owned();
    let at_bob = format!("@{bob_name}");
    assert!(run_ok(&srv, &profile, &["send", &at_bob, "hello", "from", "the", "cli"])
        .await
        .contains("sent #1"));
    let conv: uuid::Uuid = conv_id.parse().expect("dm prints the conversation id");
    assert_eq!(bob.history(conv, None, None, None).await.unwrap()[0].body, "hello from the cli");
    bob.send(conv, "b1", "reply from bob").await.unwrap();
    let history = run_ok(&srv, &profile, &["history", &conv_id]).await;
    assert!(history.contains("reply from bob") && history.contains("hello from the cli"), "{history}");
    let list = run_ok(&srv, &profile, &["list"]).await;
    assert!(list.contains(&at_bob) && list.contains("1 unread"), "{list}");

    // `tail` follows live.
    let mut tail =
        chattr(&srv, &profile, &["tail"]).stdout(Stdio::piped()).stderr(Stdio::null()).spawn().unwrap();
    let mut lines = BufReader::new(tail.stdout.take().unwrap()).lines();
    // The tail may not be connected yet: keep sending new messages until one shows up.
    let waiter = async {
        for n in 0.. {
            bob.send(conv, &format!("live-{n}"), "live from bob").await.unwrap();
            match tokio::time::timeout(std::time::Duration::from_millis(500), lines.next_line()).await {
                Ok(Ok(Some(line))) if line.contains("live from bob") => return,
                Ok(Ok(None)) => panic!("tail ended"),
                _ => continue,
            }
        }
    };
    within(waiter).await;
    tail.kill().await.unwrap();

    run_ok(&srv, &profile, &["logout"]).await;
    let out = within(chattr(&srv, &profile, &["list"]).output()).await.unwrap();
    assert!(!out.status.success(), "signed out: commands need a login again");
}

#[tokio::test]
async fn migrate_creates_the_schema_and_exits() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("sub/chattr.db");
    let out = within(
        Command::new(env!("CARGO_BIN_EXE_chattr"))
            .args(["migrate", "--store", &format!("sqlite://{}", db.display())])
            .output(),
    )
    .await
    .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(db.exists());
    // A server started on it afterwards works (the schema is complete).
    let mut settings = chattr_server::Settings::for_test(dir.path());
    settings.store = Some(format!("sqlite://{}", db.display()));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let server = chattr_server::Server::start(settings, listener).await.unwrap();
    let client = chattr_client::Client::new(&format!("http://{}", server.addr())).unwrap();
    client.signup(&name("migrated"), PASSWORD).await.unwrap();
    server.shutdown().await;
}
