//! The agent's event stream on the results port, compressed. The emulated UART
//! moves ~60 KB/s under TCG and the library's results are ~140 KB of JSON per
//! kernel, so a guest spent ~2 s per run just printing them. Each event is one line
//! `~<base64>`: a deflate chunk ended by a sync flush, so it decodes as soon as it
//! arrives, with one dictionary for the whole stream (~8x smaller than plain JSON,
//! against ~4x for events compressed one by one; the keys repeat across cases).
//!
//! Lines without the marker pass through unchanged: the agent's panic report (written
//! by a panic hook, which must not share the encoder), the snapshot's waiting line,
//! and the floor mode's line.

use std::io::Write;

use base64::engine::general_purpose::STANDARD;
use base64::Engine;

/// First byte of a compressed line (never the first byte of a JSON event).
const MARK: char = '~';

/// The agent's end: one encoder for the life of the stream.
pub struct Encoder {
    z: flate2::write::DeflateEncoder<Vec<u8>>,
}

impl Default for Encoder {
    fn default() -> Self {
        Encoder {
            z: flate2::write::DeflateEncoder::new(Vec::new(), flate2::Compression::default()),
        }
    }
}

impl Encoder {
    /// The line (without its newline) that carries `text` followed by a newline.
    pub fn line(&mut self, text: &str) -> String {
        // Writing to a Vec cannot fail; flush() is deflate's sync flush.
        let _ = self.z.write_all(text.as_bytes());
        let _ = self.z.write_all(b"\n");
        let _ = self.z.flush();
        let chunk = std::mem::take(self.z.get_mut());
        format!("{MARK}{}", STANDARD.encode(chunk))
    }
}

/// The host's end: one decoder per guest boot, fed every line in order.
pub struct Decoder {
    z: flate2::Decompress,
    broken: bool,
}

impl Default for Decoder {
    fn default() -> Self {
        Decoder {
            z: flate2::Decompress::new(false),
            broken: false,
        }
    }
}

impl Decoder {
    /// The plain lines a received line stands for. A compressed line that does not
    /// decode is an error, and so is every compressed line after it (the shared
    /// dictionary is lost): results must not vanish silently.
    pub fn lines(&mut self, line: &str) -> Result<Vec<String>, String> {
        let Some(body) = line.strip_prefix(MARK) else {
            return Ok(vec![line.to_string()]);
        };
        if self.broken {
            return Err("the result stream broke earlier; later results are unreadable".into());
        }
        self.inflate(body.trim_end()).map_err(|e| {
            self.broken = true;
            format!("a compressed result line does not decode ({e}); later results are lost")
        })
    }

    fn inflate(&mut self, body: &str) -> Result<Vec<String>, String> {
        let input = STANDARD.decode(body).map_err(|e| e.to_string())?;
        let mut out = Vec::with_capacity(input.len() * 8);
        let mut consumed = 0;
        loop {
            out.reserve(64 * 1024);
            let (before_in, before_out) = (self.z.total_in(), self.z.total_out());
            self.z
                .decompress_vec(&input[consumed..], &mut out, flate2::FlushDecompress::Sync)
                .map_err(|e| e.to_string())?;
            consumed += (self.z.total_in() - before_in) as usize;
            if consumed == input.len() && out.len() < out.capacity() {
                break;
            }
            if self.z.total_in() == before_in && self.z.total_out() == before_out {
                return Err("the chunk is truncated".into());
            }
        }
        let text = String::from_utf8(out).map_err(|e| e.to_string())?;
        if !text.ends_with('\n') {
            return Err("a chunk ended inside an event".into());
        }
        Ok(text.lines().map(str::to_string).collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_round_trip_and_shrink() {
        let mut enc = Encoder::default();
        let mut dec = Decoder::default();
        let event = r#"{"event":"case_end","run":{"id":"reuseport/x","observations":{"bind.a":"ok","bind.b":"ok","listen.a":"ok"}}}"#;
        let mut sent = 0;
        for i in 0..50 {
            let text = event.replace("/x", &format!("/case{i}"));
            let line = enc.line(&text);
            sent += line.len();
            assert_eq!(dec.lines(&line).unwrap(), vec![text]);
        }
        // A shared dictionary: 50 similar events cost far less than their text.
        assert!(sent * 2 < event.len() * 50, "{sent} bytes sent");
    }

    #[test]
    fn plain_lines_pass_through() {
        let mut dec = Decoder::default();
        let panic = r#"{"event":"agent_panic","message":"boom"}"#;
        assert_eq!(dec.lines(panic).unwrap(), vec![panic.to_string()]);
    }

    #[test]
    fn a_damaged_line_is_an_error_and_so_is_the_rest() {
        let mut enc = Encoder::default();
        let mut dec = Decoder::default();
        let first = enc.line("one");
        let second = enc.line("two");
        let third = enc.line("three");
        assert_eq!(dec.lines(&first).unwrap(), vec!["one"]);
        let damaged = format!("~{}", &second[5..]);
        assert!(dec.lines(&damaged).is_err());
        assert!(dec.lines(&third).is_err());
    }

    #[test]
    fn a_large_event_decodes_whole() {
        let mut enc = Encoder::default();
        let mut dec = Decoder::default();
        // Incompressible-ish text longer than one output buffer.
        let big: String = (0..200_000u32)
            .map(|i| char::from(b'a' + (i.wrapping_mul(2_654_435_761) >> 27) as u8 % 26))
            .collect();
        let line = enc.line(&big);
        assert_eq!(dec.lines(&line).unwrap(), vec![big]);
    }
}
