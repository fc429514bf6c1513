//! Live loopback capture with tshark, the independent decoder used as an
//! oracle. Shared by the codec and responder tests through `#[path]`.
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Returns false (and prints why) when tshark is absent outside CI; in CI a
/// missing tshark is a failure, because the oracle test must run there.
pub fn available() -> bool {
    let ok = Command::new("tshark")
        .arg("-v")
        .stdout(Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    if !ok {
        assert!(
            std::env::var_os("CI").is_none(),
            "tshark is required in CI (apt-get install tshark)"
        );
        eprintln!("tshark not installed: oracle test skipped outside CI");
    }
    ok
}

pub struct Capture {
    child: Child,
    pub path: PathBuf,
}

impl Capture {
    /// Starts capturing on `lo` with a BPF `filter`; returns once tshark
    /// reports that it is capturing.
    pub fn start(name: &str, filter: &str) -> Capture {
        let path = std::env::temp_dir().join(format!("lq6-{name}-{}.pcap", std::process::id()));
        let _ = std::fs::remove_file(&path);
        let mut child = Command::new("tshark")
            .args(["-i", "lo", "-q", "-w"])
            .arg(&path)
            .args(["-f", filter])
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start tshark");
        let stderr = child.stderr.take().expect("tshark stderr");
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if line.contains("Capturing on") {
                    let _ = tx.send(());
                }
            }
        });
        rx.recv_timeout(Duration::from_secs(20))
            .expect("tshark did not start capturing");
        // The capture filter is live once tshark says so; give the ring a moment.
        std::thread::sleep(Duration::from_millis(300));
        Capture { child, path }
    }

    /// Stops tshark cleanly (SIGINT flushes the file) and returns the path.
    pub fn stop(mut self) -> PathBuf {
        std::thread::sleep(Duration::from_millis(500));
        let _ = Command::new("kill")
            .args(["-INT", &self.child.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return self.path.clone();
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        self.path.clone()
    }
}

/// Runs `tshark -r` with decode-as rules and returns one row per frame,
/// each a list of fields (multiple occurrences joined by ',').
pub fn fields(
    pcap: &Path,
    decode_as: &[String],
    filter: &str,
    fields: &[&str],
) -> Vec<Vec<String>> {
    let mut cmd = Command::new("tshark");
    cmd.arg("-r").arg(pcap);
    for d in decode_as {
        cmd.args(["-d", d]);
    }
    if !filter.is_empty() {
        cmd.args(["-Y", filter]);
    }
    cmd.args([
        "-T",
        "fields",
        "-E",
        "separator=|",
        "-E",
        "occurrence=a",
        "-E",
        "aggregator=,",
    ]);
    for f in fields {
        cmd.args(["-e", f]);
    }
    let out = cmd.output().expect("run tshark -r");
    assert!(
        out.status.success(),
        "tshark -r failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| l.split('|').map(str::to_string).collect())
        .collect()
}

/// All values of column `i` across rows, split on ','.
pub fn column(rows: &[Vec<String>], i: usize) -> Vec<String> {
    rows.iter()
        .filter_map(|r| r.get(i))
        .flat_map(|v| {
            v.split(',')
                .filter(|s| !s.is_empty())
                .map(str::to_string)
                .collect::<Vec<_>>()
        })
        .collect()
}
