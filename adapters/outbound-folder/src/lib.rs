//! An outbound destination into a folder: for a hospital whose EHR reads HL7 v2 files, each
//! message becomes `<MSH-10>.hl7`, written under a temporary name, synced, then renamed into
//! place, so the hospital never reads half a file; a rewrite after a crash replaces it with the
//! same bytes. Delivered when the rename and the folder's sync are done.
//!
//! A write that outlasts the timeout is not abandoned (a blocking write cannot be stopped): the
//! attempt is answered Retry, and until that write ends no other starts; once it has ended, the
//! next attempt of the same message reports its outcome. Each write has a temporary file of its
//! own, created new, so two writes can never interleave in one file.

use std::{
    io,
    path::{Path, PathBuf},
    sync::atomic::{AtomicU64, Ordering},
    time::Duration,
};

use tokio::{sync::Mutex, task::JoinHandle};
use tsunagi_adapter::outbound::{Attempt, Destination, DestinationInfo};
use tsunagi_store::OutboundMessage;

/// A write still running after its attempt timed out: the message's control id and the task.
type Pending = (String, JoinHandle<io::Result<PathBuf>>);

/// `[[destination]] kind = "folder"`: a facility's inbound folder.
#[derive(Debug)]
pub struct FolderDestination {
    facility: String,
    folder: PathBuf,
    pending: Mutex<Option<Pending>>,
    writes: AtomicU64,
}

impl FolderDestination {
    /// Delivers to facility `facility` into `folder`.
    pub fn new(facility: impl Into<String>, folder: impl Into<PathBuf>) -> Self {
        Self {
            facility: facility.into(),
            folder: folder.into(),
            pending: Mutex::new(None),
            writes: AtomicU64::new(0),
        }
    }

    fn outcome(&self, written: io::Result<PathBuf>) -> Attempt {
        match written {
            Ok(path) => Attempt::Delivered {
                ack: Vec::new(),
                note: format!("written to {}", path.display()),
            },
            Err(error) => Attempt::Retry {
                ack: Vec::new(),
                error: format!("cannot write into {}: {error}", self.folder.display()),
            },
        }
    }
}

fn joined(result: Result<io::Result<PathBuf>, tokio::task::JoinError>) -> io::Result<PathBuf> {
    result.map_err(io::Error::other)?
}

#[async_trait::async_trait]
impl Destination for FolderDestination {
    fn describe(&self) -> DestinationInfo {
        DestinationInfo {
            kind: "folder",
            facility: self.facility.clone(),
            address: self.folder.display().to_string(),
        }
    }

    async fn deliver(&self, message: &OutboundMessage, timeout: Duration) -> Attempt {
        let mut pending = self.pending.lock().await;
        if let Some((control_id, handle)) = pending.take() {
            if !handle.is_finished() {
                *pending = Some((control_id, handle));
                return Attempt::Retry {
                    ack: Vec::new(),
                    error: format!(
                        "an earlier write into {} is still running",
                        self.folder.display()
                    ),
                };
            }
            let earlier = joined(handle.await);
            // The earlier write of this very message ended well: it is delivered.
            if control_id == message.control_id && earlier.is_ok() {
                return self.outcome(earlier);
            }
        }
        let nonce = self.writes.fetch_add(1, Ordering::Relaxed);
        let mut handle = write_file(&self.folder, message, nonce);
        match tokio::time::timeout(timeout, &mut handle).await {
            Ok(result) => self.outcome(joined(result)),
            Err(_) => {
                *pending = Some((message.control_id.clone(), handle));
                Attempt::Retry {
                    ack: Vec::new(),
                    error: format!(
                        "writing into {} took longer than {timeout:?}",
                        self.folder.display()
                    ),
                }
            }
        }
    }
}

/// The file name of a message: its MSH-10, reduced to letters, digits and `-` (a control id
/// cannot name a path outside the folder).
fn file_name(control_id: &str) -> String {
    control_id
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || *c == '-')
        .collect()
}

/// Starts writing `message` into `folder` on a blocking thread: a temporary file of this write's
/// own (created new), synced, renamed into place, then the folder synced.
fn write_file(
    folder: &Path,
    message: &OutboundMessage,
    nonce: u64,
) -> JoinHandle<io::Result<PathBuf>> {
    let name = file_name(&message.control_id);
    let path = folder.join(format!("{name}.hl7"));
    let temporary = folder.join(format!(".{name}.{}.{nonce}.partial", std::process::id()));
    let payload = message.payload.clone();
    let folder = folder.to_owned();
    tokio::task::spawn_blocking(move || -> io::Result<PathBuf> {
        use std::io::Write;
        let mut handle = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&temporary)?;
        handle.write_all(&payload)?;
        handle.sync_all()?;
        std::fs::rename(&temporary, &path)?;
        std::fs::File::open(&folder)?.sync_all()?;
        Ok(path)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_control_id_cannot_leave_the_folder() {
        assert_eq!(file_name("../../etc/passwd"), "etcpasswd");
        assert_eq!(file_name("T-20261203-0001"), "T-20261203-0001");
    }

    fn message(control_id: &str, payload: &[u8]) -> OutboundMessage {
        OutboundMessage {
            seq: 1,
            destination: "0610100010".into(),
            resource: "Communication/c1".into(),
            task: "Task/t1".into(),
            patient: "p1".into(),
            control_id: control_id.into(),
            payload: payload.to_vec(),
            state: tsunagi_store::DeliveryState::Pending,
            attempts: 0,
            next_attempt: 0,
            last_error: String::new(),
            ack: Vec::new(),
            created: 0,
            updated: 0,
        }
    }

    #[tokio::test]
    async fn a_message_is_written_whole_and_again_the_same() {
        let inbox = tempfile::tempdir().unwrap();
        let destination = FolderDestination::new("0610100010", inbox.path());
        let sent = message("T-1", b"MSH|^~\\&|TSUNAGI\r");
        for _ in 0..2 {
            let attempt = destination.deliver(&sent, Duration::from_secs(10)).await;
            assert!(matches!(attempt, Attempt::Delivered { .. }), "{attempt:?}");
        }
        let names: Vec<String> = std::fs::read_dir(inbox.path())
            .unwrap()
            .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert_eq!(names, vec!["T-1.hl7".to_owned()]);
        assert_eq!(
            std::fs::read(inbox.path().join("T-1.hl7")).unwrap(),
            sent.payload
        );
    }

    #[tokio::test]
    async fn a_folder_that_cannot_be_written_is_retried() {
        let destination = FolderDestination::new("0610100010", "/nonexistent/tsunagi-inbox");
        let attempt = destination
            .deliver(&message("T-2", b"x"), Duration::from_secs(10))
            .await;
        assert!(matches!(attempt, Attempt::Retry { .. }), "{attempt:?}");
    }
}
