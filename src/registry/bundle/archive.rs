//! Writing a bundle's tar: entry headers that say the same whatever the machine (mode, owner and
//! time fixed, so two exports of the same content are the same bytes), a writer that refuses every
//! write once an export failed (so `tar`'s end marker never follows a cut-short blob), and a
//! reader that counts what it gave (a blob shorter on disk than the index says is an error).

use std::io::{self, Read, Write};

pub(super) fn header(kind: tar::EntryType, size: u64) -> tar::Header {
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(kind);
    h.set_size(size);
    h.set_mode(0o644);
    h.set_mtime(0);
    h.set_uid(0);
    h.set_gid(0);
    h
}

pub(super) fn append_bytes<W: Write>(tar: &mut tar::Builder<W>, path: &str, bytes: &[u8]) -> io::Result<()> {
    let mut h = header(tar::EntryType::Regular, bytes.len() as u64);
    tar.append_data(&mut h, path, bytes)
}

/// A writer that refuses every write once poisoned.
pub(super) struct Poisonable<W> {
    pub(super) inner: W,
    pub(super) poisoned: bool,
}

impl<W: Write> Write for Poisonable<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if self.poisoned {
            return Err(io::Error::other("the export failed; nothing more is written"));
        }
        self.inner.write(buf)
    }

    fn flush(&mut self) -> io::Result<()> {
        if self.poisoned {
            return Err(io::Error::other("the export failed; nothing more is written"));
        }
        self.inner.flush()
    }
}

/// Counts what a reader gave.
pub(super) struct Counted<R> {
    pub(super) inner: R,
    pub(super) n: u64,
}

impl<R: Read> Read for Counted<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.n += n as u64;
        Ok(n)
    }
}
