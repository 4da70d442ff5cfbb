//! Who is calling and what they may do.
//!
//! Without an auth file the server is *open*: anyone who can reach it may read
//! and write, and the revision author is the `x-author` metadata (else
//! `anonymous`). The server only runs open on a loopback address unless told
//! otherwise (see `server`).
//!
//! With `--auth-file`, callers present `authorization: Bearer <token>`. The
//! file holds only SHA-256 hashes of tokens; a presented token is hashed and
//! compared with every entry in constant time. The author of a write is the
//! token's `name`, never anything the client sends. Roles:
//!
//! | role | may |
//! |---|---|
//! | reader | read and Watch |
//! | delegate | read, and SetStance for its own party only |
//! | editor | read, every clause, stance and status write, Apply |
//! | admin | everything, including CreatePlan and AddParty |

use std::path::Path;

use serde::Deserialize;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use tonic::metadata::MetadataMap;

use crate::domain::{limits, Command, Write};
use crate::error::{Error, Result};

/// A token's role.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Everything.
    Admin,
    /// Clause, stance and status writes, Apply.
    Editor,
    /// SetStance for one party.
    Delegate,
    /// Reads only.
    Reader,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct AuthFile {
    #[serde(default = "yes")]
    anonymous_read: bool,
    #[serde(default)]
    tokens: Vec<TokenEntry>,
}

fn yes() -> bool {
    true
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct TokenEntry {
    token_sha256: String,
    name: String,
    role: Role,
    party: Option<String>,
}

/// One known token (its hash, never the token itself).
pub struct Token {
    hash: [u8; 32],
    name: String,
    role: Role,
    party: Option<String>,
}

/// The server's authentication policy.
pub enum Auth {
    /// No auth file: anyone may read and write.
    Open,
    /// Bearer tokens from an auth file.
    Tokens {
        /// Whether reads and Watch need no token.
        anonymous_read: bool,
        /// Known tokens.
        tokens: Vec<Token>,
    },
}

/// What one caller may do, and the author its writes carry.
#[derive(Clone, Debug)]
pub struct Access {
    author: String,
    /// `None` in open mode (everything allowed).
    role: Option<Role>,
    party: Option<String>,
}

/// The hex SHA-256 of a token, as the auth file holds it.
pub fn hash_token(token: &str) -> String {
    Sha256::digest(token.trim().as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn parse_hex32(text: &str) -> Option<[u8; 32]> {
    if text.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, chunk) in text.as_bytes().chunks(2).enumerate() {
        let s = std::str::from_utf8(chunk).ok()?;
        out[i] = u8::from_str_radix(s, 16).ok()?;
    }
    Some(out)
}

impl Auth {
    /// Loads an auth file; the error names the line at fault.
    pub fn load(path: &Path) -> Result<Auth, String> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("cannot read auth file {}: {e}", path.display()))?;
        Auth::parse(&text).map_err(|e| format!("auth file {}: {e}", path.display()))
    }

    /// Parses auth-file text.
    pub fn parse(text: &str) -> Result<Auth, String> {
        let line_of = |offset: usize| text[..offset.min(text.len())].matches('\n').count() + 1;
        let file: AuthFile = toml::from_str(text).map_err(|e| match e.span() {
            Some(span) => format!("line {}: {}", line_of(span.start), e.message()),
            None => e.message().to_string(),
        })?;
        // Locate each [[tokens]] table so errors can name its line.
        let table_lines: Vec<usize> = text
            .lines()
            .enumerate()
            .filter(|(_, l)| l.trim() == "[[tokens]]")
            .map(|(i, _)| i + 1)
            .collect();
        let mut tokens = Vec::with_capacity(file.tokens.len());
        for (i, entry) in file.tokens.into_iter().enumerate() {
            let line = table_lines.get(i).copied().unwrap_or(0);
            let at = |msg: String| format!("line {line} (token {:?}): {msg}", entry.name);
            let hash = parse_hex32(&entry.token_sha256.to_ascii_lowercase()).ok_or_else(|| {
                at("token_sha256 must be 64 hex digits (see `peace-tracker hash-token`)".into())
            })?;
            if entry.name.trim().is_empty() || entry.name.len() > limits::MAX_REQUEST_ID {
                return Err(at("name must be 1 to 128 characters".into()));
            }
            match (&entry.role, &entry.party) {
                (Role::Delegate, None) => return Err(at("a delegate needs `party`".into())),
                (Role::Delegate, Some(p)) => {
                    limits::id("party", p).map_err(|e| at(e.to_string()))?
                }
                (_, Some(_)) => return Err(at("only delegates take `party`".into())),
                _ => {}
            }
            if tokens.iter().any(|t: &Token| t.hash == hash) {
                return Err(at("the same token hash is listed twice".into()));
            }
            tokens.push(Token {
                hash,
                name: entry.name,
                role: entry.role,
                party: entry.party,
            });
        }
        Ok(Auth::Tokens {
            anonymous_read: file.anonymous_read,
            tokens,
        })
    }

    /// Whether writes need a token.
    pub fn is_open(&self) -> bool {
        matches!(self, Auth::Open)
    }

    fn bearer(metadata: &MetadataMap) -> Result<Option<String>> {
        let Some(value) = metadata.get("authorization") else {
            return Ok(None);
        };
        let value = value
            .to_str()
            .map_err(|_| Error::Unauthenticated("authorization header is not text".into()))?;
        let token = value
            .strip_prefix("Bearer ")
            .or_else(|| value.strip_prefix("bearer "))
            .ok_or_else(|| {
                Error::Unauthenticated("authorization must be `Bearer <token>`".into())
            })?;
        Ok(Some(token.trim().to_string()))
    }

    fn identify(tokens: &[Token], token: &str) -> Result<Access> {
        let presented: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        // Compare with every entry so timing does not reveal which one matched.
        let mut found: Option<&Token> = None;
        for t in tokens {
            if bool::from(t.hash.ct_eq(&presented)) {
                found = Some(t);
            }
        }
        let t = found.ok_or_else(|| Error::Unauthenticated("unknown token".into()))?;
        Ok(Access {
            author: t.name.clone(),
            role: Some(t.role),
            party: t.party.clone(),
        })
    }

    /// The caller of a read (or Watch).
    pub fn access_for_read(&self, metadata: &MetadataMap) -> Result<Access> {
        match self {
            Auth::Open => Ok(Access::open(metadata)?),
            Auth::Tokens {
                anonymous_read,
                tokens,
            } => match Auth::bearer(metadata)? {
                Some(token) => Auth::identify(tokens, &token),
                None if *anonymous_read => Ok(Access {
                    author: "anonymous".into(),
                    role: Some(Role::Reader),
                    party: None,
                }),
                None => Err(Error::Unauthenticated(
                    "this server needs a token for reads: send `authorization: Bearer <token>`"
                        .into(),
                )),
            },
        }
    }

    /// The caller of a write.
    pub fn access_for_write(&self, metadata: &MetadataMap) -> Result<Access> {
        match self {
            Auth::Open => Access::open(metadata),
            Auth::Tokens { tokens, .. } => match Auth::bearer(metadata)? {
                Some(token) => Auth::identify(tokens, &token),
                None => Err(Error::Unauthenticated(
                    "writes need a token: send `authorization: Bearer <token>`".into(),
                )),
            },
        }
    }
}

impl Access {
    fn open(metadata: &MetadataMap) -> Result<Access> {
        let author = match metadata.get("x-author") {
            None => "anonymous".to_string(),
            Some(v) => {
                let text = v
                    .to_str()
                    .map_err(|_| Error::invalid("x-author", "must be printable ASCII"))?
                    .trim()
                    .to_string();
                if text.is_empty() || text.len() > limits::MAX_REQUEST_ID {
                    return Err(Error::invalid("x-author", "must be 1 to 128 characters"));
                }
                text
            }
        };
        Ok(Access {
            author,
            role: None,
            party: None,
        })
    }

    /// The author recorded on this caller's revisions.
    pub fn author(&self) -> &str {
        &self.author
    }

    /// Checks that this caller may commit `command`.
    pub fn may_write(&self, command: &Command) -> Result<()> {
        let Some(role) = self.role else {
            return Ok(());
        };
        let (allowed, lacks) = match (role, command) {
            (Role::Admin, _) => (true, ""),
            (Role::Editor, Command::CreatePlan { .. } | Command::AddParty { .. }) => (
                false,
                "plan administration (CreatePlan, AddParty) is for admins",
            ),
            (Role::Editor, _) => (true, ""),
            (Role::Delegate, Command::SetStance { party_id, .. }) => (
                self.party.as_deref() == Some(party_id.as_str()),
                "a delegate may set only its own party's stance",
            ),
            (Role::Delegate, _) => (
                false,
                "a delegate may only call SetStance for its own party",
            ),
            (Role::Reader, _) => (false, "a reader may not write"),
        };
        if allowed {
            Ok(())
        } else {
            let party = self
                .party
                .as_deref()
                .map(|p| format!(" for {p}"))
                .unwrap_or_default();
            Err(Error::PermissionDenied(format!(
                "{} (role {}{party}): {lacks}",
                self.author,
                format!("{role:?}").to_lowercase()
            )))
        }
    }

    /// Checks that this caller may commit an Apply batch.
    pub fn may_apply(&self, writes: &[Write]) -> Result<()> {
        match self.role {
            None | Some(Role::Admin) | Some(Role::Editor) => {
                writes.iter().try_for_each(|w| self.may_write(&w.command))
            }
            Some(role) => Err(Error::PermissionDenied(format!(
                "{} (role {}): Apply is for editors and admins",
                self.author,
                format!("{role:?}").to_lowercase()
            ))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HASH_A: &str = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"; // "test"

    #[test]
    fn hash_token_is_sha256_hex() {
        assert_eq!(hash_token("test"), HASH_A);
        assert_eq!(hash_token("test\n"), HASH_A);
    }

    #[test]
    fn bad_files_name_the_line() {
        let text = format!(
            "anonymous_read = true\n\n[[tokens]]\ntoken_sha256 = \"{HASH_A}\"\nname = \"ua\"\nrole = \"delegate\"\n"
        );
        let err = Auth::parse(&text).err().unwrap();
        assert!(err.contains("line 3") && err.contains("party"), "{err}");
        let err = Auth::parse("[[tokens]]\ntoken_sha256 = \"x\"\nname = \"a\"\nrole = \"admin\"\n")
            .err()
            .unwrap();
        assert!(err.contains("line 1") && err.contains("64 hex"), "{err}");
        let err = Auth::parse("[[tokens]]\nrole = \"king\"\n").err().unwrap();
        assert!(err.contains("line 2"), "{err}");
    }

    #[test]
    fn roles_gate_commands() {
        let delegate = Access {
            author: "ua".into(),
            role: Some(Role::Delegate),
            party: Some("ukraine".into()),
        };
        let stance = |party: &str| Command::SetStance {
            plan_id: "p".into(),
            clause_id: "c".into(),
            party_id: party.into(),
            position: crate::domain::Position::Support,
            note: String::new(),
            quote: String::new(),
            source_url: String::new(),
            stated_at: None,
            expected_version: 0,
        };
        assert!(delegate.may_write(&stance("ukraine")).is_ok());
        let err = delegate.may_write(&stance("russia")).unwrap_err();
        assert!(
            matches!(err, Error::PermissionDenied(ref m) if m.contains("delegate")),
            "{err}"
        );
        let editor = Access {
            role: Some(Role::Editor),
            party: None,
            ..delegate.clone()
        };
        assert!(editor.may_write(&stance("russia")).is_ok());
        let add = Command::AddParty {
            plan_id: "p".into(),
            party: crate::domain::PartySpec {
                id: "x".into(),
                name: "x".into(),
                required: false,
            },
        };
        assert!(editor.may_write(&add).is_err());
    }
}
