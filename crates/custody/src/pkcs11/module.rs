//! Process-wide state of loaded PKCS#11 modules.
//!
//! `C_Initialize` and `C_Finalize` act on the whole process, and the login
//! state of a token is shared by all sessions of the process (PKCS#11 v2.40
//! §5.6). So a module is loaded and initialised once per process and kept
//! loaded, and logins are counted per token: the first [`Pkcs11Custody`]
//! logs in, later ones must present the same PIN (compared against a SHA-256
//! digest in constant time), and the token is logged out when the last one
//! closes its sessions.
//!
//! [`Pkcs11Custody`]: super::Pkcs11Custody

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};

use cryptoki::context::{CInitializeArgs, CInitializeFlags, Pkcs11};
use cryptoki::error::{Error, RvError};
use cryptoki::session::{Session, UserType};
use cryptoki::slot::Slot;
use cryptoki::types::RawAuthPin;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use zeroize::Zeroizing;

use super::token_err;
use crate::CustodyError;

pub(crate) struct Module {
    pub(crate) pkcs11: Pkcs11,
    logins: Mutex<HashMap<u64, LoginState>>,
    /// Serialises the creation of token-wide objects (the wrapping key).
    pub(crate) provisioning: Mutex<()>,
}

struct LoginState {
    pin_digest: Zeroizing<[u8; 32]>,
    holders: usize,
}

fn registry() -> MutexGuard<'static, HashMap<PathBuf, Arc<Module>>> {
    static MODULES: OnceLock<Mutex<HashMap<PathBuf, Arc<Module>>>> = OnceLock::new();
    MODULES
        .get_or_init(|| Mutex::new(HashMap::new()))
        .lock()
        .unwrap_or_else(|e| e.into_inner())
}

impl Module {
    /// Loads and initialises the module at `path`, or returns the one already
    /// loaded.
    pub(crate) fn load(path: &Path) -> Result<Arc<Module>, CustodyError> {
        let load_err = |reason: String| CustodyError::ModuleLoad {
            path: path.display().to_string(),
            reason,
        };
        let canonical = path
            .canonicalize()
            .map_err(|e| load_err(format!("cannot access the file: {e}")))?;
        let mut modules = registry();
        if let Some(m) = modules.get(&canonical) {
            return Ok(Arc::clone(m));
        }
        let pkcs11 = Pkcs11::new(&canonical).map_err(|e| load_err(e.to_string()))?;
        match pkcs11.initialize(CInitializeArgs::new(CInitializeFlags::OS_LOCKING_OK)) {
            Ok(()) | Err(Error::Pkcs11(RvError::CryptokiAlreadyInitialized, _)) => {}
            Err(e) => return Err(load_err(format!("C_Initialize: {e}"))),
        }
        let module = Arc::new(Module {
            pkcs11,
            logins: Mutex::new(HashMap::new()),
            provisioning: Mutex::new(()),
        });
        modules.insert(canonical, Arc::clone(&module));
        Ok(module)
    }

    fn logins(&self) -> MutexGuard<'_, HashMap<u64, LoginState>> {
        self.logins.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Logs the user in on `slot` through `session`, or checks `pin` against
    /// the PIN of the login already held by this process.
    pub(crate) fn login(
        &self,
        slot: Slot,
        session: &Session,
        pin: &Zeroizing<Vec<u8>>,
    ) -> Result<(), CustodyError> {
        let digest = Zeroizing::new(<[u8; 32]>::from(Sha256::digest(pin.as_slice())));
        let mut logins = self.logins();
        if let Some(state) = logins.get_mut(&slot.id()) {
            if bool::from(state.pin_digest.ct_eq(&*digest)) {
                state.holders += 1;
                return Ok(());
            }
            return Err(CustodyError::PinIncorrect);
        }
        let raw = RawAuthPin::new(Box::new(pin.to_vec()));
        match session.login_with_raw(UserType::User, &raw) {
            Ok(()) => {}
            Err(Error::Pkcs11(RvError::UserAlreadyLoggedIn, _)) => {
                // Logged in by someone else in this process (another library
                // sharing the module): the PIN cannot be checked.
                tracing::warn!(
                    slot = slot.id(),
                    "token already logged in by another user of the module"
                );
            }
            Err(Error::Pkcs11(
                RvError::PinIncorrect | RvError::PinInvalid | RvError::PinLenRange,
                _,
            )) => {
                return Err(CustodyError::PinIncorrect);
            }
            Err(e) => return Err(token_err("C_Login", e)),
        }
        logins.insert(
            slot.id(),
            LoginState {
                pin_digest: digest,
                holders: 1,
            },
        );
        Ok(())
    }

    /// Closes `sessions` and releases one login holder of `slot`; the
    /// closing and the count change happen under one lock so that a
    /// concurrent [`Module::login`] sees a consistent state.
    pub(crate) fn release(&self, slot: Slot, sessions: Vec<Session>) {
        let mut logins = self.logins();
        drop(sessions);
        if let Some(state) = logins.get_mut(&slot.id()) {
            state.holders = state.holders.saturating_sub(1);
            if state.holders == 0 {
                logins.remove(&slot.id());
            }
        }
    }
}
