//! age keys: the recipients a backup encrypts to (public, all a NAS needs), the identities a
//! restore decrypts with (an identity file, perhaps passphrase-protected as `age -p` writes
//! it), and new identities (`offsite keygen`).

use super::DecodeError;
use age::secrecy::{ExposeSecret, SecretString};
use std::io::{self, Read};
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::Arc;

/// The X25519 recipients a backup is encrypted to.
#[derive(Clone)]
pub struct Recipients(Arc<Vec<age::x25519::Recipient>>);

impl Recipients {
    /// `None` for an empty list: encryption needs at least one recipient.
    pub fn new(list: Vec<age::x25519::Recipient>) -> Option<Recipients> {
        (!list.is_empty()).then(|| Recipients(Arc::new(list)))
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// `age1...` of each recipient.
    pub fn to_strings(&self) -> Vec<String> {
        self.0.iter().map(|r| r.to_string()).collect()
    }

    /// A fresh encryptor (a new random file key) for one age file.
    pub(super) fn encryptor(&self) -> io::Result<age::Encryptor> {
        age::Encryptor::with_recipients(self.0.iter().map(|r| r as &dyn age::Recipient))
            .map_err(io::Error::other)
    }

    /// `plain` as one age file to these recipients, ASCII-armored (for small secrets kept
    /// inside a JSON document, e.g. the manifest's sealed part).
    pub fn encrypt_armored(&self, plain: &[u8]) -> io::Result<String> {
        use age::armor::{ArmoredWriter, Format};
        use std::io::Write;
        let armor = ArmoredWriter::wrap_output(Vec::new(), Format::AsciiArmor)?;
        let mut w = self.encryptor()?.wrap_output(armor)?;
        w.write_all(plain)?;
        let out = w.finish()?.finish()?;
        String::from_utf8(out).map_err(io::Error::other)
    }
}

/// Parses one `age1...` recipient.
pub fn parse_recipient(s: &str) -> Result<age::x25519::Recipient, String> {
    age::x25519::Recipient::from_str(s.trim()).map_err(|e| {
        if s.trim().starts_with("AGE-SECRET-KEY-") {
            // Never repeat a secret key into logs: say what it is instead.
            return "this is an age SECRET key (AGE-SECRET-KEY-...), not a recipient: put its \
                    public key (age1..., `age-keygen -y KEYFILE`) here and keep the secret key \
                    off this machine"
                .to_string();
        }
        format!(
            "{:?} is not an age X25519 recipient (age1...): {e}",
            s.trim()
        )
    })
}

/// The identities a restore decrypts with, and where they came from (for messages).
pub struct Identities {
    ids: Vec<age::x25519::Identity>,
    /// The file they were read from.
    pub path: PathBuf,
}

impl Identities {
    pub fn new(ids: Vec<age::x25519::Identity>, path: PathBuf) -> Identities {
        Identities { ids, path }
    }

    /// The recipient (public key) of each identity, `age1...`.
    pub fn recipients(&self) -> Vec<String> {
        self.ids.iter().map(|i| i.to_public().to_string()).collect()
    }

    /// "FILE (age1...)": which identity was tried.
    pub fn describe(&self) -> String {
        format!("{} ({})", self.path.display(), self.recipients().join(", "))
    }

    /// A reader of the plaintext of the age file `stored`; authentication failures surface as
    /// `InvalidData` read errors.
    pub(super) fn decrypt<'a>(&'a self, stored: &'a [u8]) -> Result<impl Read + 'a, DecodeError> {
        let d = age::Decryptor::new_buffered(stored)
            .map_err(|e| DecodeError::Damaged(format!("not a valid age file: {e}")))?;
        d.decrypt(self.ids.iter().map(|i| i as &dyn age::Identity))
            .map_err(|e| match e {
                age::DecryptError::NoMatchingKeys => DecodeError::WrongIdentity(self.describe()),
                e => DecodeError::Damaged(format!("age: {e}")),
            })
    }

    /// The plaintext of an armored (or binary) age file, e.g. a manifest's sealed part.
    pub fn decrypt_armored(&self, text: &[u8]) -> Result<Vec<u8>, DecodeError> {
        let reader = age::armor::ArmoredReader::new(text);
        let d = age::Decryptor::new(reader)
            .map_err(|e| DecodeError::Damaged(format!("not a valid age file: {e}")))?;
        let mut r = d
            .decrypt(self.ids.iter().map(|i| i as &dyn age::Identity))
            .map_err(|e| match e {
                age::DecryptError::NoMatchingKeys => DecodeError::WrongIdentity(self.describe()),
                e => DecodeError::Damaged(format!("age: {e}")),
            })?;
        let mut out = Vec::new();
        r.read_to_end(&mut out)
            .map_err(|e| DecodeError::Damaged(format!("age authentication failed: {e}")))?;
        Ok(out)
    }
}

/// Where the passphrase of a protected identity file comes from.
pub enum Passphrase {
    /// `$OFFSITE_PASSPHRASE_FILE`, else a prompt on the terminal, else an error.
    FromEnvOrTerminal,
    /// Given (tests).
    Given(String),
}

impl Passphrase {
    fn get(&self, path: &Path) -> Result<SecretString, String> {
        if let Passphrase::Given(p) = self {
            return Ok(SecretString::from(p.clone()));
        }
        if let Some(file) = std::env::var_os("OFFSITE_PASSPHRASE_FILE").filter(|f| !f.is_empty()) {
            let text = std::fs::read_to_string(&file).map_err(|e| {
                format!(
                    "cannot read the passphrase file {} ($OFFSITE_PASSPHRASE_FILE): {e}",
                    Path::new(&file).display()
                )
            })?;
            let line = text.lines().next().unwrap_or_default();
            return Ok(SecretString::from(line.to_string()));
        }
        if !std::io::IsTerminal::is_terminal(&std::io::stdin()) {
            return Err(format!(
                "{} is protected by a passphrase and there is no terminal to ask it on: set \
                 OFFSITE_PASSPHRASE_FILE to a file holding the passphrase",
                path.display()
            ));
        }
        rpassword::prompt_password(format!("Passphrase for {}: ", path.display()))
            .map(SecretString::from)
            .map_err(|e| format!("cannot read the passphrase from the terminal: {e}"))
    }
}

/// Reads the age identities in `path`: a file as `age-keygen` or `offsite keygen` writes it,
/// or one protected by a passphrase (`age -p`), which is asked for as `pass` says.
pub fn load_identities(path: &Path, pass: &Passphrase) -> Result<Identities, String> {
    let bytes = std::fs::read(path)
        .map_err(|e| format!("cannot read the identity file {}: {e}", path.display()))?;
    let text = if is_age_file(&bytes) {
        decrypt_identity_file(&bytes, path, pass)?
    } else {
        String::from_utf8(bytes)
            .map_err(|_| format!("{} is not an age identity file (not text)", path.display()))?
    };
    let mut ids = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let id = age::x25519::Identity::from_str(line).map_err(|_| {
            format!(
                "{} line {}: not an age X25519 identity (AGE-SECRET-KEY-1...); offsite reads \
                 identity files as `offsite keygen` and `age-keygen` write them",
                path.display(),
                n + 1
            )
        })?;
        ids.push(id);
    }
    if ids.is_empty() {
        return Err(format!(
            "{} holds no age identity (AGE-SECRET-KEY-1...)",
            path.display()
        ));
    }
    Ok(Identities::new(ids, path.to_path_buf()))
}

fn is_age_file(bytes: &[u8]) -> bool {
    bytes.starts_with(b"age-encryption.org/")
        || bytes.starts_with(b"-----BEGIN AGE ENCRYPTED FILE-----")
}

/// The text of a passphrase-protected identity file.
fn decrypt_identity_file(bytes: &[u8], path: &Path, pass: &Passphrase) -> Result<String, String> {
    let d = age::Decryptor::new(age::armor::ArmoredReader::new(bytes))
        .map_err(|e| format!("{} is not a valid age file: {e}", path.display()))?;
    if !d.is_scrypt() {
        return Err(format!(
            "{} is an age file encrypted to a key, not to a passphrase: offsite cannot open it",
            path.display()
        ));
    }
    let identity = age::scrypt::Identity::new(pass.get(path)?);
    let mut r = d
        .decrypt(std::iter::once(&identity as &dyn age::Identity))
        .map_err(|e| match e {
            age::DecryptError::DecryptionFailed | age::DecryptError::NoMatchingKeys => format!(
                "wrong passphrase for {} (check $OFFSITE_PASSPHRASE_FILE, or type it again)",
                path.display()
            ),
            e => format!("cannot decrypt {}: {e}", path.display()),
        })?;
    let mut text = String::new();
    r.read_to_string(&mut text)
        .map_err(|e| format!("cannot decrypt {}: {e}", path.display()))?;
    Ok(text)
}

/// A new identity: the text of its file (as `age-keygen` writes it) and its recipient.
pub fn generate(created: &str) -> (SecretString, String) {
    let id = age::x25519::Identity::generate();
    let recipient = id.to_public().to_string();
    let text = format!(
        "# created: {created}\n# public key: {recipient}\n{}\n",
        id.to_string().expose_secret()
    );
    (SecretString::from(text), recipient)
}
