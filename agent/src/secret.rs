//! The agent's own secrets, the bearer token and the webhook key: random,
//! kept in files only their owner can read, made on first start.
//!
//! A file another user could read is refused rather than used: a token
//! someone else may have copied no longer proves the caller is the party's
//! own system.

use crate::AgentError;
use std::path::Path;

/// Random bytes in a fresh secret (written as hex).
const SECRET_BYTES: usize = 32;

/// The secret in `path`, made (0600) if the file does not exist. Returns
/// it and whether it was made now.
pub fn load_or_create(path: &Path, what: &'static str) -> Result<(Vec<u8>, bool), AgentError> {
    let bad = |reason: String| AgentError::Secret {
        what,
        path: path.to_path_buf(),
        reason,
    };
    if !path.exists() {
        let mut raw = [0u8; SECRET_BYTES];
        ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut raw)
            .map_err(|_| bad("no randomness available".into()))?;
        let text = format!("{}\n", hex::encode(raw));
        tongbao_proto::secret_file::create_new(path, text.as_bytes())
            .map_err(|e| bad(e.to_string()))?;
        return Ok((hex::encode(raw).into_bytes(), true));
    }
    check_private(path).map_err(bad)?;
    let text = std::fs::read_to_string(path).map_err(|e| bad(e.to_string()))?;
    let secret = text.trim();
    if secret.len() < 16 {
        return Err(bad(
            "the secret is shorter than 16 characters; remove the file to have a new one made"
                .into(),
        ));
    }
    Ok((secret.as_bytes().to_vec(), false))
}

/// Refuses a file that users other than its owner may read or write.
#[cfg(unix)]
fn check_private(path: &Path) -> Result<(), String> {
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(path)
        .map_err(|e| e.to_string())?
        .permissions()
        .mode();
    if mode & 0o077 != 0 {
        return Err(format!(
            "the file is open to other users (mode {:o}); make it 0600 (chmod 600)",
            mode & 0o777
        ));
    }
    Ok(())
}

#[cfg(not(unix))]
fn check_private(_: &Path) -> Result<(), String> {
    Ok(())
}

#[cfg(all(test, unix))]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    type TestResult = Result<(), Box<dyn std::error::Error>>;

    #[test]
    fn a_missing_secret_is_made_private_and_read_back_the_same() -> TestResult {
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("agent-token");
        let (made, fresh) = load_or_create(&path, "token")?;
        assert!(fresh);
        assert_eq!(made.len(), 2 * SECRET_BYTES);
        let mode = std::fs::metadata(&path)?.permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let (read, fresh) = load_or_create(&path, "token")?;
        assert!(!fresh);
        assert_eq!(made, read);
        Ok(())
    }

    #[test]
    fn a_secret_others_can_read_or_too_short_is_refused() -> TestResult {
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("agent-token");
        std::fs::write(&path, "0123456789abcdef0123456789abcdef\n")?;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644))?;
        let e = load_or_create(&path, "token").err().ok_or("accepted")?;
        assert!(e.to_string().contains("chmod 600"), "{e}");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))?;
        assert!(load_or_create(&path, "token").is_ok());
        std::fs::write(&path, "short\n")?;
        assert!(load_or_create(&path, "token").is_err());
        Ok(())
    }
}
