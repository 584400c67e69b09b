//! The simulator's state file: two fixed-size slots updated in place, one `fdatasync` per
//! change — the cost of one durable write, as a device's own settings store has.
//!
//! Layout: a 32-byte file header (`MAGIC`, the slot size), then slot 0 and slot 1. A slot is
//! `seq` (u64 LE), `len` (u32 LE), the SHA-256 of `seq ‖ len ‖ payload`, then `len` bytes of
//! JSON. A change goes into the slot *not* holding the newest state, with `seq + 1`, then the
//! file is fdatasync'd: the file never changes size, so that is one data write with no
//! metadata commit. A reader takes the valid slot with the higher `seq`; a write torn by a
//! crash fails its hash and the previous state is read instead, so a change is all or nothing.
//!
//! Writers take an exclusive `flock` (the agent's port and `latchkey sim user` may race). A
//! state that outgrows its slot, a new file, and a plain-JSON file from an older build are
//! (re)written whole by atomic replace, with slots twice the state's size.
use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom};
use std::os::unix::fs::FileExt;
use std::path::Path;

const MAGIC: &[u8; 16] = b"latchkey-sim-2\n\0";
const FILE_HEADER: u64 = 32;
const SLOT_HEADER: usize = 8 + 4 + 32;
const MIN_SLOT: u64 = 64 * 1024;

/// Which version of the state a file holds: changes whenever the state does.
pub type Version = u64;

fn err(path: &Path, e: impl std::fmt::Display) -> String {
    format!("{}: {e}", path.display())
}

fn digest(seq: u64, payload: &[u8]) -> [u8; 32] {
    let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
    ctx.update(&seq.to_le_bytes());
    ctx.update(&u32::try_from(payload.len()).unwrap_or(u32::MAX).to_le_bytes());
    ctx.update(payload);
    let mut out = [0u8; 32];
    out.copy_from_slice(ctx.finish().as_ref());
    out
}

/// The slot size of a slotted file, or None for anything else.
fn slot_size(file: &File) -> Option<u64> {
    let mut header = [0u8; FILE_HEADER as usize];
    file.read_exact_at(&mut header, 0).ok()?;
    if &header[..16] != MAGIC {
        return None;
    }
    let size = u64::from_le_bytes(header[16..24].try_into().ok()?);
    (size >= SLOT_HEADER as u64).then_some(size)
}

/// A slot's sequence number and payload, if the slot holds a complete write.
fn read_slot(file: &File, slot_size: u64, slot: u64) -> Option<(u64, Vec<u8>)> {
    let offset = FILE_HEADER + slot * slot_size;
    let mut header = [0u8; SLOT_HEADER];
    file.read_exact_at(&mut header, offset).ok()?;
    let seq = u64::from_le_bytes(header[..8].try_into().ok()?);
    let len = u64::from(u32::from_le_bytes(header[8..12].try_into().ok()?));
    if seq == 0 || len > slot_size - SLOT_HEADER as u64 {
        return None;
    }
    let mut payload = vec![0u8; usize::try_from(len).ok()?];
    file.read_exact_at(&mut payload, offset + SLOT_HEADER as u64).ok()?;
    (digest(seq, &payload)[..] == header[12..]).then_some((seq, payload))
}

/// The newest complete state of a slotted file: (seq, slot, payload).
fn newest(file: &File, slot_size: u64) -> Option<(u64, u64, Vec<u8>)> {
    let a = read_slot(file, slot_size, 0).map(|(seq, p)| (seq, 0, p));
    let b = read_slot(file, slot_size, 1).map(|(seq, p)| (seq, 1, p));
    match (a, b) {
        (Some(a), Some(b)) => Some(if a.0 >= b.0 { a } else { b }),
        (a, b) => a.or(b),
    }
}

/// Reads the newest state (JSON) and its version.
pub fn read(path: &Path) -> Result<(Vec<u8>, Version), String> {
    let mut file = File::open(path).map_err(|e| err(path, e))?;
    match slot_size(&file) {
        Some(size) => {
            let (seq, _, payload) = newest(&file, size).ok_or_else(|| err(path, "no complete state in either slot"))?;
            Ok((payload, seq))
        }
        // A plain JSON file (an older build, or written by hand): its version is its mtime.
        None => {
            let mut bytes = Vec::new();
            file.seek(SeekFrom::Start(0)).and_then(|_| file.read_to_end(&mut bytes)).map_err(|e| err(path, e))?;
            let mtime = file.metadata().ok().and_then(|m| m.modified().ok());
            let version = mtime
                .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
                .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX));
            Ok((bytes, version | 1 << 63))
        }
    }
}

/// The version of the state in the file now, without reading the state.
pub fn version(path: &Path) -> Result<Version, String> {
    let file = File::open(path).map_err(|e| err(path, e))?;
    match slot_size(&file) {
        Some(size) => {
            let seq = |slot| {
                let mut header = [0u8; 8];
                file.read_exact_at(&mut header, FILE_HEADER + slot * size).ok().map(|()| u64::from_le_bytes(header))
            };
            // The highest sequence number claimed; `read` validates the slot itself.
            Ok(seq(0).unwrap_or(0).max(seq(1).unwrap_or(0)))
        }
        None => read(path).map(|(_, v)| v),
    }
}

/// Writes a new state; returns its version.
pub fn write(path: &Path, json: &[u8]) -> Result<Version, String> {
    match OpenOptions::new().read(true).write(true).open(path) {
        Ok(file) => {
            let lock = nix::fcntl::Flock::lock(file, nix::fcntl::FlockArg::LockExclusive)
                .map_err(|(_, e)| err(path, format!("locking: {e}")))?;
            let fits = slot_size(&lock).filter(|size| json.len() as u64 + SLOT_HEADER as u64 <= *size);
            match fits.and_then(|size| newest(&lock, size).map(|(seq, slot, _)| (size, seq, slot))) {
                Some((size, seq, slot)) => {
                    write_slot(&lock, size, 1 - slot, seq + 1, json).map_err(|e| err(path, e))?;
                    Ok(seq + 1)
                }
                None => create(path, json, 1).map(|()| 1),
            }
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => create(path, json, 1).map(|()| 1),
        Err(e) => Err(err(path, e)),
    }
}

fn write_slot(file: &File, slot_size: u64, slot: u64, seq: u64, json: &[u8]) -> std::io::Result<()> {
    let mut buf = Vec::with_capacity(SLOT_HEADER + json.len());
    buf.extend_from_slice(&seq.to_le_bytes());
    buf.extend_from_slice(&u32::try_from(json.len()).unwrap_or(u32::MAX).to_le_bytes());
    buf.extend_from_slice(&digest(seq, json));
    buf.extend_from_slice(json);
    file.write_all_at(&buf, FILE_HEADER + slot * slot_size)?;
    file.sync_data()
}

/// A whole new file (0600) by atomic replace: the state in slot 0, slot 1 empty.
fn create(path: &Path, json: &[u8], seq: u64) -> Result<(), String> {
    let size = (2 * (json.len() as u64 + SLOT_HEADER as u64)).next_power_of_two().max(MIN_SLOT);
    let mut bytes = vec![0u8; usize::try_from(FILE_HEADER + 2 * size).map_err(|e| err(path, e))?];
    bytes[..16].copy_from_slice(MAGIC);
    bytes[16..24].copy_from_slice(&size.to_le_bytes());
    let slot = FILE_HEADER as usize;
    bytes[slot..slot + 8].copy_from_slice(&seq.to_le_bytes());
    bytes[slot + 8..slot + 12].copy_from_slice(&u32::try_from(json.len()).unwrap_or(u32::MAX).to_le_bytes());
    bytes[slot + 12..slot + SLOT_HEADER].copy_from_slice(&digest(seq, json));
    bytes[slot + SLOT_HEADER..slot + SLOT_HEADER + json.len()].copy_from_slice(json);
    crate::atomic::write(path, &bytes, 0o600).map_err(|e| err(path, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_change_alternates_slots_and_reads_back_the_newest() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("sim.json");
        write(&path, b"{\"n\":1}").expect("create");
        let size = std::fs::metadata(&path).expect("meta").len();
        for n in 2..=5 {
            write(&path, format!("{{\"n\":{n}}}").as_bytes()).expect("update");
            assert_eq!(read(&path).expect("read").0, format!("{{\"n\":{n}}}").into_bytes());
            assert_eq!(version(&path).expect("version"), n);
        }
        assert_eq!(std::fs::metadata(&path).expect("meta").len(), size, "updates must not change the size");
    }

    #[test]
    fn a_torn_write_leaves_the_previous_state() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("sim.json");
        write(&path, b"{\"n\":1}").expect("create");
        write(&path, b"{\"n\":2}").expect("update");
        // Tear the newest slot (seq 2 went to slot 1): flip a payload byte.
        let file = OpenOptions::new().read(true).write(true).open(&path).expect("open");
        let size = slot_size(&file).expect("slotted");
        file.write_all_at(b"X", FILE_HEADER + size + SLOT_HEADER as u64 + 2).expect("tear");
        assert_eq!(read(&path).expect("read").0, b"{\"n\":1}".to_vec());
    }

    #[test]
    fn plain_json_is_read_and_converted_and_a_big_state_grows_the_slots() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("sim.json");
        std::fs::write(&path, b"{\"legacy\":true}").expect("plain");
        assert_eq!(read(&path).expect("read").0, b"{\"legacy\":true}".to_vec());
        write(&path, b"{\"legacy\":false}").expect("convert");
        assert_eq!(read(&path).expect("read").0, b"{\"legacy\":false}".to_vec());
        let big = format!("{{\"pad\":\"{}\"}}", "x".repeat(100_000));
        write(&path, big.as_bytes()).expect("grow");
        assert_eq!(read(&path).expect("read").0, big.into_bytes());
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(std::fs::metadata(&path).expect("meta").permissions().mode() & 0o777, 0o600);
    }
}
