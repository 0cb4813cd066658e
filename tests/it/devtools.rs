//! Headless Chromium driven over the DevTools protocol, for the tests of pages the service
//! serves.
//!
//! The protocol runs over `--remote-debugging-pipe`: Chromium reads commands from its file
//! descriptor 3 and writes replies and events to 4, each message JSON ended by a NUL byte. A
//! shell hands the child's stdin and stdout over as 3 and 4 (the standard library maps no other
//! descriptors without `unsafe`). So no port is opened, none is read from the browser's output,
//! and no WebSocket client is needed: the commands are a few JSON objects, and a whole CDP
//! crate (its generated protocol types alone are a large build) would buy nothing here.
//!
//! Every wait is bounded: a hung browser fails the test with a message. The browser runs in
//! its own process group with a fresh profile in a scratch folder; dropping [`Browser`] kills
//! the group and then removes the folder, whether the test passed or not.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use serde_json::{json, Value};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::process::{Child, ChildStdin, ChildStdout};
use twofold_tests::scratch::ScratchDir;

/// How long one protocol command may take before the browser counts as hung.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(60);

pub struct Browser {
    child: Child,
    commands: ChildStdin,
    replies: BufReader<ChildStdout>,
    next_id: u64,
    /// The page's session: every page command is sent to it.
    session: String,
    /// Holds the profile and the browser's log; removed after the browser is killed.
    dir: ScratchDir,
}

impl Browser {
    /// Starts headless Chromium with a fresh profile and opens one blank page.
    pub async fn launch(label: &str) -> Browser {
        let dir = ScratchDir::new(label).unwrap();
        let log = std::fs::File::create(dir.join("chromium.log")).unwrap();
        let child = tokio::process::Command::new("sh")
            .arg("-c")
            .arg(r#"exec "$0" "$@" 3<&0 4>&1 0</dev/null 1>/dev/null"#)
            .arg("/usr/bin/chromium")
            .args([
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-quic",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--remote-debugging-pipe",
            ])
            .arg(format!("--user-data-dir={}", dir.join("profile").display()))
            .arg("about:blank")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(log)
            .process_group(0)
            .kill_on_drop(true)
            .spawn();
        let mut child =
            child.expect("/usr/bin/chromium runs (scripts/test installs Debian's chromium)");
        let commands = child.stdin.take().unwrap();
        let replies = BufReader::new(child.stdout.take().unwrap());
        let mut browser = Browser {
            child,
            commands,
            replies,
            next_id: 0,
            session: String::new(),
            dir,
        };
        let target = browser
            .browser_command("Target.createTarget", json!({"url": "about:blank"}))
            .await;
        let attached = browser
            .browser_command(
                "Target.attachToTarget",
                json!({"targetId": target["targetId"], "flatten": true}),
            )
            .await;
        browser.session = attached["sessionId"].as_str().unwrap().to_owned();
        browser
    }

    /// The scratch folder of this browser (removed when it is dropped).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn log_path(&self) -> PathBuf {
        self.dir.join("chromium.log")
    }

    /// Sends `method` to the browser itself and returns its result.
    pub async fn browser_command(&mut self, method: &str, params: Value) -> Value {
        self.send(None, method, params).await
    }

    /// Sends `method` to the page and returns its result.
    pub async fn command(&mut self, method: &str, params: Value) -> Value {
        let session = self.session.clone();
        self.send(Some(session), method, params).await
    }

    async fn send(&mut self, session: Option<String>, method: &str, params: Value) -> Value {
        self.next_id += 1;
        let id = self.next_id;
        let mut message = json!({"id": id, "method": method, "params": params});
        if let Some(session) = session {
            message["sessionId"] = Value::String(session);
        }
        let mut bytes = serde_json::to_vec(&message).unwrap();
        bytes.push(0);
        let exchange = async {
            self.commands.write_all(&bytes).await?;
            self.commands.flush().await?;
            loop {
                let mut buffer = Vec::new();
                if self.replies.read_until(0, &mut buffer).await? == 0 {
                    return Err(std::io::Error::other("the browser closed its pipe"));
                }
                buffer.pop();
                let reply: Value =
                    serde_json::from_slice(&buffer).map_err(std::io::Error::other)?;
                // Events (no id) and nothing else are interleaved with the replies.
                if reply["id"] == id {
                    return Ok(reply);
                }
            }
        };
        let reply = match tokio::time::timeout(COMMAND_TIMEOUT, exchange).await {
            Ok(Ok(reply)) => reply,
            Ok(Err(error)) => panic!("{method}: {error}; {}", self.log_tail()),
            Err(_) => panic!(
                "{method}: no answer from the browser within {COMMAND_TIMEOUT:?}; {}",
                self.log_tail()
            ),
        };
        if let Some(error) = reply.get("error") {
            panic!("{method} failed: {error}");
        }
        reply["result"].clone()
    }

    /// The end of the browser's own log, for a failure message.
    fn log_tail(&self) -> String {
        let log = std::fs::read_to_string(self.log_path()).unwrap_or_default();
        let tail: Vec<&str> = log.lines().rev().take(20).collect();
        let tail: Vec<&str> = tail.into_iter().rev().collect();
        format!("chromium's log ends:\n{}", tail.join("\n"))
    }

    /// Evaluates `expression` in the page (as if from a user's gesture, as a click would be)
    /// and returns its value; an exception fails the test.
    pub async fn evaluate(&mut self, expression: &str) -> Value {
        let result = self
            .command(
                "Runtime.evaluate",
                json!({
                    "expression": expression,
                    "returnByValue": true,
                    "awaitPromise": true,
                    "userGesture": true,
                }),
            )
            .await;
        if let Some(exception) = result.get("exceptionDetails") {
            panic!("`{expression}` threw: {exception}");
        }
        result["result"]["value"].clone()
    }

    /// Waits until `condition` (a JavaScript expression) is true on the page, for at most
    /// `limit`; `failure` (an expression giving a string, empty when all is well) is checked
    /// on the way and fails the test at once with what it says.
    pub async fn wait_for(&mut self, condition: &str, failure: &str, limit: Duration) {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            if self.evaluate(condition).await == Value::Bool(true) {
                return;
            }
            let problem = self.evaluate(failure).await;
            if let Some(problem) = problem.as_str().filter(|problem| !problem.is_empty()) {
                panic!("waiting for `{condition}`, the page said: {problem}");
            }
            if tokio::time::Instant::now() >= deadline {
                panic!("`{condition}` did not become true within {limit:?}");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

impl Drop for Browser {
    /// Kills the browser and every process it started (its group), so that its profile can
    /// be removed when the scratch folder drops next.
    fn drop(&mut self) {
        if let Some(group) = self.child.id() {
            let _ = std::process::Command::new("kill")
                .args(["-KILL", "--", &format!("-{group}")])
                .status();
        }
        let _ = self.child.start_kill();
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while std::time::Instant::now() < deadline {
            if !matches!(self.child.try_wait(), Ok(None)) {
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}
