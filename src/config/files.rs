//! The one module of `config` that reads: every file a config names besides itself
//! (certificates, keys, CA files, policy files, the fleet's rollout status, the system's trust
//! store) is read here, before validation, with guards: only regular files, at most
//! [`MAX_FILE_BYTES`]. What was read is
//! listed as the config's [`Input`]s, so that a change of any of them is a change of the config,
//! and the watcher and the change check know what to look at.

use std::collections::HashMap;
use std::io::{Error, ErrorKind, Read};
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use super::schema::ConfigSpec;

/// The largest certificate, key, CA or policy file weir reads.
pub const MAX_FILE_BYTES: u64 = 16 * 1024 * 1024;

/// The lower-case hex sha256 of `bytes`: how weir names a config's revision and a file's content.
pub fn sha256_hex(bytes: &[u8]) -> String {
    format!("{:x}", Sha256::digest(bytes))
}

/// Something a config read besides its own file.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Input {
    File(PathBuf),
    /// The system's trusted root certificates, read for upstream TLS without a `ca` file.
    SystemRoots,
}

impl Input {
    /// A digest of what this input reads now (or of why it cannot be read): equal digests mean
    /// an unchanged input.
    pub fn fingerprint(&self) -> [u8; 32] {
        let mut h = Sha256::new();
        match self {
            Input::File(path) => {
                h.update(path.as_os_str().as_encoded_bytes());
                match read_limited(path, MAX_FILE_BYTES) {
                    Ok(bytes) => h.update(&bytes),
                    Err(e) => h.update(format!("\0error: {e}")),
                }
            }
            Input::SystemRoots => {
                h.update(b"system roots");
                for cert in rustls_native_certs::load_native_certs().certs {
                    h.update(cert.as_ref());
                }
            }
        }
        h.finalize().into()
    }

    /// The file's path, for a file.
    pub fn path(&self) -> Option<&Path> {
        match self {
            Input::File(p) => Some(p),
            Input::SystemRoots => None,
        }
    }
}

/// The files a spec names, read before validation (which is pure): certificate and key files,
/// CA files, policy files, and the system's roots when an upstream speaks TLS without a CA.
pub struct Files {
    contents: HashMap<PathBuf, std::io::Result<Vec<u8>>>,
    system_roots: Option<rustls::RootCertStore>,
    inputs: Vec<Input>,
}

impl Files {
    /// Reads what `spec` names, relative paths against `base_dir`.
    pub fn read(spec: &ConfigSpec, base_dir: &Path) -> Files {
        let mut files = Files {
            contents: HashMap::new(),
            system_roots: None,
            inputs: Vec::new(),
        };
        for l in &spec.listeners {
            for c in l.tls.iter().flat_map(|t| &t.certificates) {
                files.file(&base_dir.join(&c.cert));
                files.file(&base_dir.join(&c.key));
            }
        }
        for t in spec.upstreams.iter().filter_map(|u| u.tls.as_ref()) {
            match &t.ca {
                Some(ca) => files.file(&base_dir.join(ca)),
                None if !files.inputs.contains(&Input::SystemRoots) => {
                    files.inputs.push(Input::SystemRoots);
                    files.system_roots = crate::tls::system_roots().ok();
                }
                None => {}
            }
        }
        for p in &spec.policies {
            files.file(&base_dir.join(p));
        }
        if let Some(token) = &spec.admin.token_file {
            files.file(&base_dir.join(token));
        }
        // The fleet's rollout status is part of the config: read, hashed and watched with it.
        if let Some(fleet) = &spec.fleet {
            files.file_within(
                &base_dir.join(&fleet.status),
                super::status::MAX_STATUS_BYTES,
            );
        }
        files
    }

    fn file(&mut self, path: &Path) {
        self.file_within(path, MAX_FILE_BYTES);
    }

    fn file_within(&mut self, path: &Path, limit: u64) {
        if !self.contents.contains_key(path) {
            self.inputs.push(Input::File(path.to_path_buf()));
            let read = read_limited(path, limit);
            self.contents.insert(path.to_path_buf(), read);
        }
    }

    /// The bytes of `path`, which the spec names.
    pub fn get(&self, path: &Path) -> std::io::Result<&[u8]> {
        match self.contents.get(path) {
            Some(Ok(bytes)) => Ok(bytes),
            Some(Err(e)) => Err(std::io::Error::new(e.kind(), e.to_string())),
            None => Err(std::io::Error::other("not read with the config")),
        }
    }

    /// The bytes of `path` for `tls`, which names the file in its error.
    pub fn tls_file(&self, path: &Path) -> Result<&[u8], crate::tls::TlsError> {
        self.get(path).map_err(|source| crate::tls::TlsError::Read {
            file: path.to_path_buf(),
            source,
        })
    }

    /// The system's trusted roots.
    pub fn system_roots(&self) -> Result<rustls::RootCertStore, crate::tls::TlsError> {
        self.system_roots
            .clone()
            .ok_or(crate::tls::TlsError::NoSystemRoots)
    }

    /// What was read, in order.
    pub fn inputs(&self) -> &[Input] {
        &self.inputs
    }
}

/// Reads the regular file at `path` (symlinks followed), refusing anything that is not a
/// regular file (a directory, a FIFO that would block, a device such as `/dev/zero` that never
/// ends) and files larger than `limit` bytes.
pub fn read_limited(path: &Path, limit: u64) -> std::io::Result<Vec<u8>> {
    use std::os::unix::fs::OpenOptionsExt;
    // Non-blocking, so that opening a FIFO returns at once (and is then refused) instead of
    // waiting for a writer; a regular file ignores the flag.
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(path)?;
    let meta = file.metadata()?;
    if !meta.is_file() {
        return Err(Error::new(ErrorKind::InvalidInput, "not a regular file"));
    }
    if meta.len() > limit {
        return Err(Error::new(
            ErrorKind::InvalidData,
            format!("{} bytes, more than the limit of {limit}", meta.len()),
        ));
    }
    let mut bytes = Vec::with_capacity(meta.len() as usize);
    // The file can grow between the stat and the read: never read past the limit.
    file.take(limit + 1).read_to_end(&mut bytes)?;
    if bytes.len() as u64 > limit {
        return Err(Error::new(
            ErrorKind::InvalidData,
            format!("more than the limit of {limit} bytes"),
        ));
    }
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_regular_files_within_the_limit_are_read() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("f");
        std::fs::write(&file, b"12345").unwrap();
        assert_eq!(read_limited(&file, 5).unwrap(), b"12345");
        let err = read_limited(&file, 4).unwrap_err();
        assert_eq!(err.to_string(), "5 bytes, more than the limit of 4");
        assert_eq!(
            read_limited(dir.path(), 5).unwrap_err().to_string(),
            "not a regular file"
        );
        assert_eq!(
            read_limited(Path::new("/dev/zero"), 5)
                .unwrap_err()
                .to_string(),
            "not a regular file"
        );
        let fifo = dir.path().join("fifo");
        assert!(
            std::process::Command::new("mkfifo")
                .arg(&fifo)
                .status()
                .unwrap()
                .success()
        );
        // Opening a FIFO for reading blocks until a writer comes: weir must not open it.
        let (tx, rx) = std::sync::mpsc::channel();
        let f = fifo.clone();
        std::thread::spawn(move || tx.send(read_limited(&f, 5).map_err(|e| e.to_string())));
        let answer = rx.recv_timeout(std::time::Duration::from_secs(5));
        assert_eq!(answer, Ok(Err("not a regular file".to_owned())));
    }

    #[test]
    fn a_fingerprint_changes_with_the_content_and_covers_errors() {
        let dir = tempfile::tempdir().unwrap();
        let input = Input::File(dir.path().join("f"));
        let missing = input.fingerprint();
        std::fs::write(dir.path().join("f"), b"a").unwrap();
        let a = input.fingerprint();
        assert_ne!(missing, a);
        assert_eq!(a, input.fingerprint());
        std::fs::write(dir.path().join("f"), b"b").unwrap();
        assert_ne!(a, input.fingerprint());
    }
}
