//! The wire between the sandbox's init and bldr's main process: a stream of frames, each
//! a kind byte, a little-endian u32 length and the payload. Events are JSON; command
//! output is raw bytes, passed on unchanged (it need not be UTF-8). Pure encoding.

use serde::{Deserialize, Serialize};
use std::io::{self, Read, Write};

/// What the init reports, in order.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "kebab-case")]
pub enum Event {
    /// The namespaces exist; their inodes let anyone find the build's processes.
    Namespaces {
        pid_ns: u64,
        mnt_ns: u64,
    },
    /// Every mount is in place and the root is pivoted.
    Ready,
    SetupFailed {
        message: String,
    },
    CommandStarted {
        number: usize,
    },
    CommandFinished {
        number: usize,
        exit_code: Option<i32>,
        signal: Option<i32>,
        duration_ms: u64,
        timed_out: bool,
    },
    /// A signal reached the build from outside and was forwarded.
    Interrupted {
        signal: i32,
    },
    /// The build's processes are all dead; `killed` is how many were still running.
    /// `code` is the exit code init is about to return, so
    /// bldr can write the record while the namespaces are still being torn down.
    Cleaned {
        killed: usize,
        leftover_mount_points: Vec<String>,
        code: i32,
    },
    /// Init has let go of the build's root after `Cleaned`: no mount of the build is left,
    /// so an overlay's layer may be removed while init finishes exiting.
    RootReleased,
    /// A file copied into the artifacts folder. `path` is relative to it (and to the
    /// rule's `from`); `path_hex` holds the exact bytes when they are not UTF-8.
    ArtifactCopied {
        rule: usize,
        path: String,
        path_hex: Option<String>,
        size: u64,
        sha256: String,
        source: String,
    },
    /// A matched entry that was not copied, and why.
    ArtifactRefused {
        rule: usize,
        path: String,
        path_hex: Option<String>,
        reason: String,
    },
    /// A rule is done; `matched` files were copied.
    ArtifactRuleDone {
        rule: usize,
        matched: usize,
    },
    /// Init has killed every process of the build and asks for the artifacts folder,
    /// which bldr's main process then sends on init's fd 0 (SCM_RIGHTS). The sandbox
    /// layer answers it; it never reaches the run's watch.
    ArtifactsFolderWanted,
    /// Collection stopped: disk full, an I/O error. Names the file.
    ArtifactsFailed {
        message: String,
    },
    /// The master side of the command's new pty comes with this frame (SCM_RIGHTS).
    Terminal,
    /// Anything else worth a line in the log.
    Note {
        message: String,
    },
}

/// One frame.
#[derive(Debug, Clone, PartialEq)]
pub enum Frame {
    Event(Event),
    Output(Vec<u8>),
}

const EVENT: u8 = b'E';
const OUTPUT: u8 = b'O';
/// Frames larger than this are refused on reading: a corrupt stream, not a real frame.
const MAX_FRAME: u32 = 16 << 20;

/// Encodes a frame into bytes ready for one write.
pub fn encode(frame: &Frame) -> Vec<u8> {
    let (kind, payload) = match frame {
        Frame::Event(e) => (EVENT, serde_json::to_vec(e).expect("events serialize")),
        Frame::Output(b) => (OUTPUT, b.clone()),
    };
    let mut out = Vec::with_capacity(5 + payload.len());
    out.push(kind);
    out.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    out.extend_from_slice(&payload);
    out
}

/// Writes one frame.
pub fn write_frame(w: &mut impl Write, frame: &Frame) -> io::Result<()> {
    w.write_all(&encode(frame))
}

/// Reads one frame; `Ok(None)` at a clean end of stream.
pub fn read_frame(r: &mut impl Read) -> io::Result<Option<Frame>> {
    let mut head = [0u8; 5];
    let mut got = 0;
    while got < 5 {
        let n = r.read(&mut head[got..])?;
        if n == 0 {
            return if got == 0 {
                Ok(None)
            } else {
                Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "truncated frame",
                ))
            };
        }
        got += n;
    }
    let len = u32::from_le_bytes([head[1], head[2], head[3], head[4]]);
    if len > MAX_FRAME {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "oversized frame",
        ));
    }
    let mut payload = vec![0u8; len as usize];
    r.read_exact(&mut payload)?;
    match head[0] {
        EVENT => serde_json::from_slice(&payload)
            .map(|e| Some(Frame::Event(e)))
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e)),
        OUTPUT => Ok(Some(Frame::Output(payload))),
        k => Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("unknown frame kind {k}"),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_round_trip_including_binary_output() {
        let frames = vec![
            Frame::Event(Event::CommandStarted { number: 1 }),
            Frame::Output(vec![0xff, 0, b'\n']),
            Frame::Event(Event::CommandFinished {
                number: 1,
                exit_code: Some(0),
                signal: None,
                duration_ms: 5,
                timed_out: false,
            }),
        ];
        let bytes: Vec<u8> = frames.iter().flat_map(encode).collect();
        let mut r = &bytes[..];
        let mut back = Vec::new();
        while let Some(f) = read_frame(&mut r).unwrap() {
            back.push(f);
        }
        assert_eq!(back, frames);
    }

    #[test]
    fn a_truncated_stream_is_an_error_not_a_hang() {
        let bytes = encode(&Frame::Output(b"hello".to_vec()));
        let mut r = &bytes[..7];
        assert!(read_frame(&mut r).is_err());
    }
}
