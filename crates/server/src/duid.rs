//! The server's own DUID (RFC 8415 §11): given in the config, or generated once as a DUID-LLT
//! and kept in `server-duid` (hex) in the state directory, so it is stable across restarts.

use lq6_proto::Duid;
use std::io::Read;
use std::path::Path;

/// Errors reading or writing the DUID file.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DuidError {
    #[error("{path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error("{path}: not a DUID in hex")]
    Bad { path: String },
}

/// File name of the persisted DUID.
pub const DUID_FILE: &str = "server-duid";

/// Reads `dir/server-duid`, or creates it with a new DUID-LLT.
pub fn load_or_create(dir: &Path) -> Result<Duid, DuidError> {
    let path = dir.join(DUID_FILE);
    let io = |source| DuidError::Io {
        path: path.display().to_string(),
        source,
    };
    match std::fs::read_to_string(&path) {
        Ok(s) => s.trim().parse::<Duid>().map_err(|_| DuidError::Bad {
            path: path.display().to_string(),
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            std::fs::create_dir_all(dir).map_err(io)?;
            let mut mac = [0u8; 6];
            std::fs::File::open("/dev/urandom")
                .and_then(|mut f| f.read_exact(&mut mac))
                .map_err(io)?;
            mac[0] = (mac[0] | 0x02) & 0xfe; // locally administered, unicast
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or(0);
            let duid = Duid::llt(1, lq6_proto::types::unix_to_dhcp_time(now), &mac);
            let tmp = dir.join(format!("{DUID_FILE}.tmp"));
            std::fs::write(&tmp, format!("{}\n", hex_of(duid.as_bytes()))).map_err(io)?;
            std::fs::rename(&tmp, &path).map_err(io)?;
            Ok(duid)
        }
        Err(e) => Err(io(e)),
    }
}

fn hex_of(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}
