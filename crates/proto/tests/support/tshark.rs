//! Live loopback capture with tshark, the independent decoder used as an
//! oracle. Shared by the codec and responder tests through `#[path]`.
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::net::UdpSocket;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Payload prefix of the datagrams [`Capture`] sends to itself to know what tshark
/// has written; [`fields`] leaves those frames out.
const SENTINEL: &str = "lq6-capture-sentinel";

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
    /// Where the sentinel datagrams go (a socket of ours, so nothing answers with ICMP).
    sink: UdpSocket,
}

impl Capture {
    /// Starts capturing on `lo` with a BPF `filter`; returns once a datagram
    /// sent through the capture has reached the file, so that everything the
    /// test sends from then on is captured.
    pub fn start(name: &str, filter: &str) -> Capture {
        let path = std::env::temp_dir().join(format!("lq6-{name}-{}.pcap", std::process::id()));
        let _ = std::fs::remove_file(&path);
        let sink = UdpSocket::bind("[::1]:0").expect("bind the sentinel socket");
        let port = sink.local_addr().expect("sentinel port").port();
        let mut child = Command::new("tshark")
            .args(["-i", "lo", "-q", "-w"])
            .arg(&path)
            .args(["-f", &format!("({filter}) or (udp dst port {port})")])
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
        let mut cap = Capture { child, path, sink };
        // "Capturing on" may come before the filter is live; a datagram in the
        // file proves it is.
        cap.sync("start");
        cap
    }

    /// Sends sentinel datagrams through the capture until one is in the file.
    /// tshark writes packets in order, so then everything sent before is too
    /// (it reaches the file a fraction of a second late, later on a loaded
    /// machine, and a SIGINT before that would lose it).
    fn sync(&mut self, tag: &str) {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        let marker = format!("{SENTINEL}-{tag}-{}-{nanos}", std::process::id());
        let to = self.sink.local_addr().expect("sentinel address");
        let tx = UdpSocket::bind("[::1]:0").expect("bind a sentinel sender");
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            tx.send_to(marker.as_bytes(), to).expect("send a sentinel");
            let resend = Instant::now() + Duration::from_secs(1);
            while Instant::now() < resend {
                let file = std::fs::read(&self.path).unwrap_or_default();
                if file.windows(marker.len()).any(|w| w == marker.as_bytes()) {
                    return;
                }
                if let Ok(Some(st)) = self.child.try_wait() {
                    panic!("tshark exited ({st}) before writing the {tag} sentinel");
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            assert!(
                Instant::now() < deadline,
                "tshark did not write the {tag} sentinel to {} within 30 s",
                self.path.display()
            );
        }
    }

    /// Stops tshark cleanly (SIGINT flushes the file) once everything sent so
    /// far is in the file, and returns the path.
    pub fn stop(mut self) -> PathBuf {
        self.sync("stop");
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
    // Never the capture's own sentinel datagrams.
    let not_sentinel = format!("!(udp contains \"{SENTINEL}\")");
    if filter.is_empty() {
        cmd.args(["-Y", &not_sentinel]);
    } else {
        cmd.args(["-Y", &format!("({filter}) && {not_sentinel}")]);
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
