//! Mends the HTTP/2 `:authority` that etcd 3.4's clients send on their
//! per-endpoint connections.
//!
//! `etcdctl endpoint status`, `endpoint hashkv` (and their `--cluster` forms) dial
//! each endpoint on its own, and etcd 3.4's client then sends the whole endpoint
//! URL as the authority: `http://127.0.0.1:2379`. That is not a valid authority,
//! and the HTTP/2 server under tonic refuses the stream with `PROTOCOL_ERROR`
//! (etcd's Go server lets it pass). So a client connection is read through
//! [`AuthorityFix`], which finds each request's header block and rewrites an
//! authority like that to its `host:port`, leaving every other byte as it was.
//!
//! Header blocks are HPACK-compressed, and the decoder's table of earlier headers
//! lives in the server; it is not needed here. A rewritten authority is a literal
//! that names `:authority` by its static index (as Go's encoder does) or by name,
//! and the new value is shorter than the old. So the server's table entry is
//! smaller than the client thinks, the server evicts entries no sooner than the
//! client, and every index the client sends still finds the same entry. A header
//! block split over CONTINUATION frames is passed on untouched.

use std::io;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use bytes::{Buf, BytesMut};
use loona_hpack::huffman::HuffmanDecoder;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio_util::io::poll_read_buf;
use tonic::codegen::http::uri::Authority;
use tonic::transport::server::Connected;

/// What every HTTP/2 client sends first.
const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
/// Bytes of an HTTP/2 frame header.
const FRAME_HEADER: usize = 9;
/// Frame type of HEADERS.
const HEADERS: u8 = 0x1;
/// HEADERS flags.
const END_HEADERS: u8 = 0x4;
const PADDED: u8 = 0x8;
const PRIORITY: u8 = 0x20;
/// `:authority`'s index in HPACK's static table.
const AUTHORITY_INDEX: u64 = 1;
/// How much is read from the socket at a time.
const READ_CHUNK: usize = 16 * 1024;

/// Where the reader is in the client's byte stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Position {
    /// Before the connection preface has been seen whole.
    Preface,
    /// At a frame header, or inside the payload of a frame passed on as it is
    /// (`pass` more bytes of it).
    Frames { pass: usize },
    /// Not HTTP/2 with prior knowledge: everything is passed on.
    Other,
}

/// A client connection whose requests' malformed authorities are mended (see
/// the module docs). Writes go straight through.
#[derive(Debug)]
pub struct AuthorityFix<S> {
    inner: S,
    /// Bytes read from the socket; the first `checked` of them are ready to hand
    /// on.
    input: BytesMut,
    checked: usize,
    position: Position,
    eof: bool,
    /// The last authority literal (as encoded) found to need no mending: clients
    /// that do not index the authority send the same bytes with every request.
    fine: Vec<u8>,
}

impl<S> AuthorityFix<S> {
    /// Wraps a freshly accepted client connection.
    pub fn new(inner: S) -> Self {
        AuthorityFix {
            inner,
            input: BytesMut::new(),
            checked: 0,
            position: Position::Preface,
            eof: false,
            fine: Vec::new(),
        }
    }

    /// Moves `checked` as far over `input` as whole units allow.
    fn check(&mut self) {
        loop {
            let unchecked = &self.input[self.checked..];
            match self.position {
                Position::Other => {
                    self.checked = self.input.len();
                    return;
                }
                Position::Preface => {
                    let seen = unchecked.len().min(PREFACE.len());
                    if unchecked[..seen] != PREFACE[..seen] {
                        self.position = Position::Other;
                    } else if seen == PREFACE.len() {
                        self.checked += seen;
                        self.position = Position::Frames { pass: 0 };
                    } else {
                        return;
                    }
                }
                Position::Frames { pass } if pass > 0 => {
                    let step = pass.min(unchecked.len());
                    if step == 0 {
                        return;
                    }
                    self.checked += step;
                    self.position = Position::Frames { pass: pass - step };
                }
                Position::Frames { .. } => {
                    if unchecked.len() < FRAME_HEADER {
                        return;
                    }
                    let length = usize::from(unchecked[0]) << 16
                        | usize::from(unchecked[1]) << 8
                        | usize::from(unchecked[2]);
                    if unchecked[3] != HEADERS {
                        self.checked += FRAME_HEADER;
                        self.position = Position::Frames { pass: length };
                        continue;
                    }
                    let whole = FRAME_HEADER + length;
                    if unchecked.len() < whole {
                        return;
                    }
                    match mend_headers_frame(&unchecked[..whole], &mut self.fine) {
                        Some(mended) => {
                            let rest = self.input.split_off(self.checked + whole);
                            self.input.truncate(self.checked);
                            self.input.extend_from_slice(&mended);
                            self.input.unsplit(rest);
                            self.checked += mended.len();
                        }
                        None => self.checked += whole,
                    }
                }
            }
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for AuthorityFix<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        loop {
            if this.checked > 0 {
                let count = this.checked.min(buf.remaining());
                buf.put_slice(&this.input[..count]);
                this.input.advance(count);
                this.checked -= count;
                return Poll::Ready(Ok(()));
            }
            if this.eof {
                // A stream cut inside a frame: hand on what there is and let the
                // HTTP/2 server report it.
                this.checked = this.input.len();
                if this.checked == 0 {
                    return Poll::Ready(Ok(()));
                }
                continue;
            }
            this.input.reserve(READ_CHUNK);
            let count = ready!(poll_read_buf(
                Pin::new(&mut this.inner),
                cx,
                &mut this.input
            ))?;
            if count == 0 {
                this.eof = true;
            } else {
                this.check();
            }
        }
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for AuthorityFix<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

impl<S: Connected> Connected for AuthorityFix<S> {
    type ConnectInfo = S::ConnectInfo;

    fn connect_info(&self) -> Self::ConnectInfo {
        self.inner.connect_info()
    }
}

/// The HEADERS frame `frame` with its malformed authorities mended, or `None`
/// when it has none (or is not one this module rewrites). `fine` is an encoded
/// authority value known to need no mending, and is kept up to date.
fn mend_headers_frame(frame: &[u8], fine: &mut Vec<u8>) -> Option<Vec<u8>> {
    let flags = frame[4];
    if flags & END_HEADERS == 0 {
        return None;
    }
    let payload = &frame[FRAME_HEADER..];
    let (pad_length, mut start) = if flags & PADDED != 0 {
        (usize::from(*payload.first()?), 1)
    } else {
        (0, 0)
    };
    if flags & PRIORITY != 0 {
        start += 5;
    }
    let end = payload.len().checked_sub(pad_length)?;
    let block = payload.get(start..end)?;
    let mended = mend_header_block(block, fine)?;
    let length = start + mended.len() + pad_length;
    let mut out = Vec::with_capacity(FRAME_HEADER + length);
    let length = u32::try_from(length).ok()?.to_be_bytes();
    out.extend_from_slice(&length[1..]);
    out.extend_from_slice(&frame[3..FRAME_HEADER]);
    out.extend_from_slice(&payload[..start]);
    out.extend_from_slice(&mended);
    out.extend_from_slice(&payload[end..]);
    Some(out)
}

/// The header block `block` with its malformed authority literals mended, or
/// `None` when there is nothing to mend or the block cannot be parsed.
fn mend_header_block(block: &[u8], fine: &mut Vec<u8>) -> Option<Vec<u8>> {
    let mut out: Option<Vec<u8>> = None;
    let mut at = 0;
    while at < block.len() {
        let first = block[at];
        let (prefix_bits, literal) = match first {
            byte if byte & 0x80 != 0 => (7, false),    // indexed field
            byte if byte & 0xC0 == 0x40 => (6, true),  // literal, indexed afterwards
            byte if byte & 0xE0 == 0x20 => (5, false), // dynamic table size update
            _ => (4, true),                            // literal, not indexed
        };
        let (index, mut end) = read_integer(block, at, prefix_bits)?;
        if !literal {
            if let Some(out) = &mut out {
                out.extend_from_slice(&block[at..end]);
            }
            at = end;
            continue;
        }
        let names_authority = if index == 0 {
            let name = HpackString::at(block, end)?;
            end = name.end;
            name.text(block)? == b":authority"
        } else {
            index == AUTHORITY_INDEX
        };
        let name_end = end;
        let value = HpackString::at(block, name_end)?;
        let value_end = value.end;
        let encoded = &block[name_end..value_end];
        let mended = if names_authority && encoded != fine.as_slice() {
            let mended = mended_authority(&value.text(block)?);
            if mended.is_none() {
                *fine = encoded.to_vec();
            }
            mended
        } else {
            None
        };
        match (mended, &mut out) {
            (Some(value), out) => {
                let out = out.get_or_insert_with(|| block[..at].to_vec());
                out.extend_from_slice(&block[at..name_end]);
                write_integer(out, 0, 7, value.len() as u64);
                out.extend_from_slice(&value);
            }
            (None, Some(out)) => out.extend_from_slice(&block[at..value_end]),
            (None, None) => {}
        }
        at = value_end;
    }
    out
}

/// `value` as a valid authority, if it is a URL (`scheme://host:port[/...]`)
/// rather than one; `None` when it is fine or cannot be mended.
fn mended_authority(value: &[u8]) -> Option<Vec<u8>> {
    let text = std::str::from_utf8(value).ok()?;
    if Authority::try_from(text).is_ok() {
        return None;
    }
    let (_, rest) = text.split_once("://")?;
    let host = rest.split('/').next()?;
    Authority::try_from(host).ok()?;
    Some(host.as_bytes().to_vec())
}

/// Reads an HPACK integer with an `prefix_bits`-bit prefix at `at`; returns it
/// and where it ends.
fn read_integer(block: &[u8], at: usize, prefix_bits: u32) -> Option<(u64, usize)> {
    let mask = (1u8 << prefix_bits) - 1;
    let mut value = u64::from(*block.get(at)? & mask);
    let mut at = at + 1;
    if value < u64::from(mask) {
        return Some((value, at));
    }
    let mut shift = 0;
    loop {
        let byte = *block.get(at)?;
        at += 1;
        value = value.checked_add(u64::from(byte & 0x7F).checked_shl(shift)?)?;
        if byte & 0x80 == 0 {
            return Some((value, at));
        }
        shift += 7;
        if shift > 56 {
            return None;
        }
    }
}

/// Appends `value` as an HPACK integer with an `prefix_bits`-bit prefix, the
/// prefix's other bits set to `flags`.
fn write_integer(out: &mut Vec<u8>, flags: u8, prefix_bits: u32, value: u64) {
    let mask = (1u8 << prefix_bits) - 1;
    if value < u64::from(mask) {
        out.push(flags | value as u8);
        return;
    }
    out.push(flags | mask);
    let mut rest = value - u64::from(mask);
    while rest >= 0x80 {
        out.push((rest as u8 & 0x7F) | 0x80);
        rest >>= 7;
    }
    out.push(rest as u8);
}

/// An HPACK string literal in a header block: its octets are `start..end`.
struct HpackString {
    huffman: bool,
    start: usize,
    end: usize,
}

impl HpackString {
    /// The string literal at `at`, if the block holds all of it.
    fn at(block: &[u8], at: usize) -> Option<HpackString> {
        let huffman = *block.get(at)? & 0x80 != 0;
        let (length, start) = read_integer(block, at, 7)?;
        let end = start.checked_add(usize::try_from(length).ok()?)?;
        (end <= block.len()).then_some(HpackString {
            huffman,
            start,
            end,
        })
    }

    /// Its text, Huffman-decoded if it was coded.
    fn text(&self, block: &[u8]) -> Option<Vec<u8>> {
        let raw = &block[self.start..self.end];
        if self.huffman {
            HuffmanDecoder::new().decode(raw).ok()
        } else {
            Some(raw.to_vec())
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;
    use loona_hpack::Encoder;
    use tokio::io::AsyncReadExt;

    fn headers_frame(block: &[u8], flags: u8, stream: u32) -> Vec<u8> {
        let mut frame = Vec::new();
        frame.extend_from_slice(&u32::try_from(block.len()).unwrap().to_be_bytes()[1..]);
        frame.push(HEADERS);
        frame.push(flags);
        frame.extend_from_slice(&stream.to_be_bytes());
        frame.extend_from_slice(block);
        frame
    }

    fn decoded(frame: &[u8], decoder: &mut loona_hpack::Decoder) -> Vec<(String, String)> {
        decoder
            .decode(&frame[FRAME_HEADER..])
            .unwrap()
            .into_iter()
            .map(|(name, value)| {
                (
                    String::from_utf8(name).unwrap(),
                    String::from_utf8(value).unwrap(),
                )
            })
            .collect()
    }

    /// A literal authority, indexed afterwards, named by static index, its value
    /// Huffman-coded: how Go's encoder sends the first request's authority.
    fn go_style_authority(value: &[u8]) -> Vec<u8> {
        let coded = huffman_encode(value);
        let mut block = vec![0x41];
        write_integer(&mut block, 0x80, 7, coded.len() as u64);
        block.extend_from_slice(&coded);
        block
    }

    /// HPACK's Huffman code for the characters of endpoint URLs (RFC 7541
    /// Appendix B).
    fn huffman_encode(value: &[u8]) -> Vec<u8> {
        let code = |byte: u8| -> (u32, u32) {
            match byte {
                b'0'..=b'2' => (u32::from(byte - b'0'), 5),
                b'a' => (0x3, 5),
                b'c' => (0x4, 5),
                b'e' => (0x5, 5),
                b'i' => (0x6, 5),
                b'o' => (0x7, 5),
                b's' => (0x8, 5),
                b't' => (0x9, 5),
                b'3'..=b'9' => (0x19 + u32::from(byte - b'3'), 6),
                b'.' => (0x17, 6),
                b'/' => (0x18, 6),
                b':' => (0x5c, 7),
                b'h' => (0x27, 6),
                b'p' => (0x2b, 6),
                b'l' => (0x28, 6),
                _ => panic!("no code for {byte}"),
            }
        };
        let mut out = Vec::new();
        let (mut bits, mut count) = (0u64, 0u32);
        for byte in value {
            let (symbol, length) = code(*byte);
            bits = bits << length | u64::from(symbol);
            count += length;
            while count >= 8 {
                out.push((bits >> (count - 8)) as u8);
                count -= 8;
            }
        }
        if count > 0 {
            out.push(((bits << (8 - count)) as u8) | ((1u8 << (8 - count)) - 1));
        }
        assert_eq!(HuffmanDecoder::new().decode(&out).unwrap(), value);
        out
    }

    #[test]
    fn a_url_authority_becomes_its_host_and_port() {
        let mut block = go_style_authority(b"http://127.0.0.1:2379");
        block.extend_from_slice(&Encoder::new().encode([(&b":path"[..], &b"/x"[..])]));
        let frame = headers_frame(&block, END_HEADERS, 1);
        let mended = mend_headers_frame(&frame, &mut Vec::new()).expect("mended");
        let mut decoder = loona_hpack::Decoder::new();
        assert_eq!(
            decoded(&mended, &mut decoder),
            [
                (":authority".into(), "127.0.0.1:2379".into()),
                (":path".into(), "/x".into())
            ]
        );
        // The next request refers to the table entry, which holds the mended value.
        let again = headers_frame(&[0xBE], END_HEADERS, 3);
        assert!(mend_headers_frame(&again, &mut Vec::new()).is_none());
        assert_eq!(
            decoded(&again, &mut decoder),
            [(":authority".into(), "127.0.0.1:2379".into())]
        );
    }

    #[test]
    fn valid_and_unrewritable_blocks_are_left_alone() {
        let block = go_style_authority(b"127.0.0.1:2379");
        assert!(
            mend_headers_frame(&headers_frame(&block, END_HEADERS, 1), &mut Vec::new()).is_none()
        );
        let url = go_style_authority(b"http://127.0.0.1:2379");
        assert!(mend_headers_frame(&headers_frame(&url, 0, 1), &mut Vec::new()).is_none());
        assert!(mend_header_block(&[0x41, 0x85, 0x01], &mut Vec::new()).is_none());
    }

    #[test]
    fn padding_and_priority_are_kept() {
        let block = go_style_authority(b"http://10.0.0.1:2379/");
        let mut payload = vec![2];
        payload.extend_from_slice(&[0, 0, 0, 0, 16]);
        payload.extend_from_slice(&block);
        payload.extend_from_slice(&[0, 0]);
        let frame = headers_frame(&payload, END_HEADERS | PADDED | PRIORITY, 5);
        let mended = mend_headers_frame(&frame, &mut Vec::new()).expect("mended");
        assert_eq!(&mended[3..9], &frame[3..9]);
        assert_eq!(&mended[9..15], &payload[..6]);
        assert_eq!(&mended[mended.len() - 2..], &[0, 0]);
        let block = &mended[15..mended.len() - 2];
        let headers = loona_hpack::Decoder::new().decode(block).unwrap();
        assert_eq!(
            headers,
            [(b":authority".to_vec(), b"10.0.0.1:2379".to_vec())]
        );
    }

    #[tokio::test]
    async fn the_stream_reads_back_mended_whatever_the_chunking() {
        let mut stream = PREFACE.to_vec();
        let data = [0, 0, 3, 0, 1, 0, 0, 0, 1, b'a', b'b', b'c'];
        stream.extend_from_slice(&data);
        let url = go_style_authority(b"http://127.0.0.1:2379");
        stream.extend_from_slice(&headers_frame(&url, END_HEADERS, 1));
        stream.extend_from_slice(&data);
        let mut expected = PREFACE.to_vec();
        expected.extend_from_slice(&data);
        expected.extend_from_slice(
            &mend_headers_frame(&headers_frame(&url, END_HEADERS, 1), &mut Vec::new()).unwrap(),
        );
        expected.extend_from_slice(&data);
        for chunk in [1, 7, 1000] {
            let mut builder = chunked(&stream, chunk);
            let mut fixed = AuthorityFix::new(&mut builder);
            let mut read = Vec::new();
            fixed.read_to_end(&mut read).await.unwrap();
            assert_eq!(read, expected, "chunks of {chunk}");
        }
    }

    #[tokio::test]
    async fn other_protocols_pass_through() {
        let request = b"GET / HTTP/1.1\r\nHost: x\r\n\r\n";
        let mut source = chunked(request, 5);
        let mut read = Vec::new();
        AuthorityFix::new(&mut source)
            .read_to_end(&mut read)
            .await
            .unwrap();
        assert_eq!(read, request);
    }

    /// A reader that hands `bytes` out `chunk` at a time.
    fn chunked(bytes: &[u8], chunk: usize) -> ChunkedReader {
        ChunkedReader {
            bytes: bytes.to_vec(),
            at: 0,
            chunk,
        }
    }

    struct ChunkedReader {
        bytes: Vec<u8>,
        at: usize,
        chunk: usize,
    }

    impl AsyncRead for ChunkedReader {
        fn poll_read(
            mut self: Pin<&mut Self>,
            _: &mut Context<'_>,
            buf: &mut ReadBuf<'_>,
        ) -> Poll<io::Result<()>> {
            let end = (self.at + self.chunk)
                .min(self.bytes.len())
                .min(self.at + buf.remaining());
            let at = self.at;
            buf.put_slice(&self.bytes[at..end]);
            self.at = end;
            Poll::Ready(Ok(()))
        }
    }
}
