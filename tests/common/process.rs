//! Runs the built `peace-tracker` binary as a child process.

use std::net::SocketAddr;
use std::path::Path;
use std::process::Stdio;

use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

pub const BIN: &str = env!("CARGO_BIN_EXE_peace-tracker");

pub struct ChildServer {
    pub child: Child,
    pub addr: SocketAddr,
}

/// Starts the binary on 127.0.0.1:0 and waits for its "serving" log line.
pub async fn spawn(data_dir: &Path, extra: &[&str]) -> ChildServer {
    let mut child = Command::new(BIN)
        .args(["--listen", "127.0.0.1:0", "--data-dir"])
        .arg(data_dir)
        .args(extra)
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("binary starts");
    let stderr = child.stderr.take().unwrap();
    let mut lines = BufReader::new(stderr).lines();
    let addr = loop {
        let line = lines
            .next_line()
            .await
            .unwrap()
            .expect("server exited before serving");
        if line.contains("peace-tracker serving") {
            let at = line.find("addr=").expect("addr in the serving line") + 5;
            let text: String = line[at..]
                .chars()
                .take_while(|c| !c.is_whitespace())
                .collect();
            break text.parse().expect("an address");
        }
    };
    // Keep draining stderr so the child never blocks on a full pipe.
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    ChildServer { child, addr }
}

/// Runs `peace-tracker check --data-dir DIR`: (success, stdout + stderr).
pub async fn check(data_dir: &Path) -> (bool, String) {
    tool("check", data_dir).await
}

/// Runs `peace-tracker {command} --data-dir DIR`: (success, stdout + stderr).
pub async fn tool(command: &str, data_dir: &Path) -> (bool, String) {
    let out = Command::new(BIN)
        .args([command, "--data-dir"])
        .arg(data_dir)
        .output()
        .await
        .expect("the tool runs");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

/// Sends SIGTERM (a clean stop) and waits for the process to exit.
pub async fn terminate(server: &mut ChildServer) -> std::process::ExitStatus {
    let pid = server.child.id().expect("running").to_string();
    let sent = Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .await
        .expect("kill runs");
    assert!(sent.success(), "kill -TERM {pid} failed");
    server.child.wait().await.expect("the server exits")
}
