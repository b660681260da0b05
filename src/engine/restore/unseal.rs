//! The identity a restore or `verify --decrypt` decrypts with ([`KeySource`]) and the opening of
//! encrypted backups' manifests ([`KeySource::unseal`]).
//!
//! Guarantees: the identity file is read (and a passphrase asked for) only when a backup to
//! read is encrypted, once, on the blocking pool (scrypt and a terminal prompt never hold the
//! reactor). Every encrypted manifest is opened before the caller writes anything or starts a
//! receiver, so a missing or wrong identity costs nothing; the errors are
//! [`IdentityError`]s (exit 2) naming the backup, its recipients and the identity tried.

use crate::codec::keys::{load_identities, Passphrase};
use crate::codec::{DecodeError, Identities};
use crate::error::IdentityError;
use crate::manifest::Manifest;
use anyhow::{anyhow, Result};
use std::path::PathBuf;
use std::sync::Arc;

/// Where the identity comes from.
pub struct KeySource {
    /// `--identity FILE`, else `identity_file` of `[encryption]`; `None`: neither is set.
    pub identity: Option<PathBuf>,
    /// The config file, named when no identity is given.
    pub config: PathBuf,
    /// How a passphrase-protected identity file is opened.
    pub passphrase: Passphrase,
}

impl Clone for KeySource {
    fn clone(&self) -> Self {
        KeySource {
            identity: self.identity.clone(),
            config: self.config.clone(),
            passphrase: match &self.passphrase {
                Passphrase::Given(p) => Passphrase::Given(p.clone()),
                Passphrase::FromEnvOrTerminal => Passphrase::FromEnvOrTerminal,
            },
        }
    }
}

impl std::fmt::Debug for KeySource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeySource")
            .field("identity", &self.identity)
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl KeySource {
    /// No identity (tests, and backups known to be unencrypted).
    pub fn none() -> KeySource {
        KeySource {
            identity: None,
            config: PathBuf::from("the config file"),
            passphrase: Passphrase::FromEnvOrTerminal,
        }
    }

    /// Opens the sealed part of every encrypted manifest of `manifests` in place (their
    /// plaintext hashes and source are known afterwards). Returns the identities when one was
    /// needed, `None` when no manifest is encrypted (then no file is read).
    pub async fn unseal(&self, manifests: Vec<&mut Manifest>) -> Result<Option<Arc<Identities>>> {
        let mut encrypted: Vec<&mut Manifest> = manifests
            .into_iter()
            .filter(|m| m.encoding.is_encrypted())
            .collect();
        let Some(first) = encrypted.first() else {
            return Ok(None);
        };
        let Some(path) = self.identity.clone() else {
            return Err(IdentityError::Missing {
                backup_id: first.backup_id.clone(),
                recipients: first.recipients.clone(),
                config: self.config.clone(),
            }
            .into());
        };
        let pass = self.clone().passphrase;
        let mut copies: Vec<Manifest> = encrypted.iter().map(|m| (**m).clone()).collect();
        let (ids, copies) = tokio::task::spawn_blocking(move || -> Result<_> {
            let ids = load_identities(&path, &pass).map_err(IdentityError::Unreadable)?;
            for m in &mut copies {
                open(m, &ids)?;
            }
            Ok((ids, copies))
        })
        .await
        .map_err(|e| anyhow!("opening the encrypted manifests failed: {e}"))??;
        for (m, opened) in encrypted.iter_mut().zip(copies) {
            **m = opened;
        }
        Ok(Some(Arc::new(ids)))
    }
}

/// Opens one manifest's sealed part.
fn open(m: &mut Manifest, ids: &Identities) -> Result<()> {
    match m.unseal(ids) {
        Ok(()) => Ok(()),
        Err(DecodeError::WrongIdentity(tried)) => Err(IdentityError::Wrong {
            backup_id: m.backup_id.clone(),
            tried,
            recipients: m.recipients.clone(),
        }
        .into()),
        Err(e) => Err(anyhow!(
            "backup {}: the sealed part of its manifest cannot be opened with {}: {e}; the \
             manifest is damaged, restore an older backup or fetch it from another provider",
            m.backup_id,
            ids.describe()
        )),
    }
}
