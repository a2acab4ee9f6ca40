//! `lapa keys`: the ed25519 key that signs bundles (`lapa export`) and the public half a board
//! trusts (`lapa-edge run --public-key`, a board profile's `trusted_keys`).

use anyhow::{Context, Result};
use clap::{Args, Subcommand};
use lapa_model::signing::{PublicKey, SecretKey};
use std::path::PathBuf;

#[derive(Debug, Subcommand)]
pub enum KeysCommand {
    /// Generate a signing key: the secret key at --out (mode 0600, never overwritten) and its
    /// public key at --out.pub, the file a board installs.
    Generate(GenerateArgs),
    /// Print a public key's id and comment (the id is what a signature and an error name).
    Show(ShowArgs),
}

#[derive(Debug, Args)]
pub struct GenerateArgs {
    /// Where the secret key goes (default: ~/.config/lapa/keys/lapa-signing, which `lapa export`
    /// uses when --sign-key is not given).
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// A comment stored in both files (who, which workstation).
    #[arg(long, default_value = "lapa bundle signing key")]
    pub comment: String,
}

#[derive(Debug, Args)]
pub struct ShowArgs {
    /// A public key file (.pub) or a secret key file.
    pub key: PathBuf,
}

/// The default secret key path: `$XDG_CONFIG_HOME/lapa/keys/lapa-signing` or under `~/.config`.
pub fn default_key_path() -> Option<PathBuf> {
    let base = std::env::var_os("XDG_CONFIG_HOME")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".config")))?;
    Some(base.join("lapa/keys/lapa-signing"))
}

pub fn run(c: KeysCommand) -> Result<()> {
    match c {
        KeysCommand::Generate(a) => {
            let out = match a.out {
                Some(p) => p,
                None => default_key_path().context("no --out given and neither XDG_CONFIG_HOME nor HOME is set")?,
            };
            let key = SecretKey::generate(&a.comment)?;
            let public = key.write_pair(&out)?;
            println!("secret key {} (keep it on this machine)", out.display());
            println!(
                "public key {} (id {}): install it on the board, e.g. `lapa-edge run --public-key {}`",
                public.display(),
                key.public().id(),
                public.display()
            );
            Ok(())
        }
        KeysCommand::Show(a) => {
            let key = match PublicKey::read(&a.key) {
                Ok(k) => k,
                Err(public_err) => SecretKey::read(&a.key).map(|k| k.public()).map_err(|_| public_err)?,
            };
            println!("ed25519 key {} ({})", key.id(), key.comment);
            Ok(())
        }
    }
}
