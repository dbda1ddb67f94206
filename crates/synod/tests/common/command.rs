//! Running a command (etcdctl, the synod CLI) with a deadline, capturing its output.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// What a finished command printed and how it exited.
#[derive(Debug, Clone)]
pub struct CmdOutput {
    /// Exit code (-1 if killed by a signal).
    pub code: i32,
    /// Standard output, lossily decoded.
    pub stdout: String,
    /// Standard error, lossily decoded.
    pub stderr: String,
}

/// Runs `command` with `stdin` fed to it, and waits at most `timeout` for it to exit
/// (then kills it and fails the test). Output pipes are drained on their own threads,
/// so a chatty command never blocks on a full pipe.
pub fn run_command(mut command: Command, stdin: Option<Vec<u8>>, timeout: Duration) -> CmdOutput {
    use std::io::{Read, Write};
    let description = format!("{command:?}");
    let description = if description.len() > 300 {
        format!("{}...", &description[..300])
    } else {
        description
    };
    let mut child = command
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|error| panic!("cannot run {description}: {error}"));
    let writer = stdin.map(|bytes| {
        let mut pipe = child.stdin.take().expect("stdin pipe");
        std::thread::spawn(move || {
            // The command may exit without reading everything; that is not our error.
            let _ = pipe.write_all(&bytes);
        })
    });
    let mut stdout_pipe = child.stdout.take().expect("stdout pipe");
    let mut stderr_pipe = child.stderr.take().expect("stderr pipe");
    let stdout_reader = std::thread::spawn(move || {
        let mut bytes = Vec::new();
        let _ = stdout_pipe.read_to_end(&mut bytes);
        bytes
    });
    let stderr_reader = std::thread::spawn(move || {
        let mut bytes = Vec::new();
        let _ = stderr_pipe.read_to_end(&mut bytes);
        bytes
    });
    let deadline = Instant::now() + timeout;
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait for command") {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{description} did not finish within {timeout:?}");
        }
        std::thread::sleep(Duration::from_millis(5));
    };
    if let Some(writer) = writer {
        let _ = writer.join();
    }
    let stdout = stdout_reader.join().expect("stdout reader");
    let stderr = stderr_reader.join().expect("stderr reader");
    CmdOutput {
        code: status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&stdout).into_owned(),
        stderr: String::from_utf8_lossy(&stderr).into_owned(),
    }
}
