//! The custody a configuration file describes: the signature token, the
//! HPKE token if `hpke_token` names one, the routing between them and
//! software ([`CustodyRouter`]), and the home of the state-sealing key.
//!
//! A TPM 2.0 through tpm2-pkcs11 signs with ECDSA P-256 but has neither
//! `C_DeriveKey` (no HPKE key) nor `CKM_AES_GCM` (no state-sealing key).
//! With `hpke_token` the TPM keeps the signature keys while another token
//! (an HSM, or SoftHSM in tests) keeps the HPKE keys and the sealing key:
//!
//! ```toml
//! # tpm.toml: the signature token
//! module = "/usr/lib/x86_64-linux-gnu/pkcs11/libtpm2_pkcs11.so"
//! token_label = "hsmls-tpm"
//! pin_file = "tpm-user.pin"
//! hpke_token = "hsm.toml"     # HPKE keys, and the sealing key if the TPM cannot seal
//! ```

use std::fmt;
use std::sync::Arc;

use super::{Pkcs11Config, Pkcs11Custody, Pkcs11Sealer};
use crate::{CustodyError, CustodyRouter, KeyCustody};

/// Where the state-sealing key lives ([`ConfiguredCustody::seal_home`]).
#[non_exhaustive]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SealHome {
    /// The signature token (it offers `CKM_AES_KEY_GEN` and `CKM_AES_GCM`).
    Token,
    /// The HPKE token: the signature token cannot seal.
    HpkeToken,
}

/// The custody of a configuration file, opened: the tokens it names and
/// the [`CustodyRouter`] over them.
pub struct ConfiguredCustody {
    router: Arc<CustodyRouter>,
    token: Arc<Pkcs11Custody>,
    hpke_token: Option<Arc<Pkcs11Custody>>,
}

impl fmt::Debug for ConfiguredCustody {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ConfiguredCustody")
            .field("router", &self.router)
            .finish_non_exhaustive()
    }
}

impl ConfiguredCustody {
    /// Opens the signature token of `config` and, if `hpke_token` names
    /// one, the HPKE token ([`Pkcs11Config::hpke_token_config`]), and
    /// routes between them as `hpke_keys` says ([`CustodyRouter::new`] or
    /// [`CustodyRouter::split`]).
    pub fn open(config: &Pkcs11Config) -> Result<Self, CustodyError> {
        let hpke_config = config.hpke_token_config()?;
        if let Some(h) = &hpke_config {
            // Checked before either token is opened (and logged in).
            if h.token_label == config.token_label {
                return Err(CustodyError::SplitConfig(crate::SplitFault::SameTokenLabel));
            }
        }
        let token = Arc::new(Pkcs11Custody::open(config)?);
        let (router, hpke_token) = match hpke_config {
            None => (
                CustodyRouter::new(token.clone() as Arc<dyn KeyCustody>, config.hpke_keys),
                None,
            ),
            Some(h) => {
                let hpke = Arc::new(Pkcs11Custody::open(&h)?);
                let router = CustodyRouter::split(
                    token.clone() as Arc<dyn KeyCustody>,
                    &config.token_label,
                    hpke.clone() as Arc<dyn KeyCustody>,
                    &h.token_label,
                    config.hpke_keys,
                )?;
                (router, Some(hpke))
            }
        };
        Ok(ConfiguredCustody {
            router: Arc::new(router),
            token,
            hpke_token,
        })
    }

    /// Opens as [`open`](Self::open), then finds (or creates) the
    /// state-sealing key in its home ([`state_sealer`](Self::state_sealer))
    /// and lets the router seal the HPKE keys it keeps in software under it
    /// ([`CustodyRouter::with_sealed_software_keys`]), so that they survive
    /// a restart: what the client runtime opens.
    pub fn open_sealed(config: &Pkcs11Config) -> Result<(Self, Pkcs11Sealer), CustodyError> {
        let opened = Self::open(config)?;
        let sealer = opened.state_sealer()?;
        let ConfiguredCustody {
            router,
            token,
            hpke_token,
        } = opened;
        // The router was made by `open` and is not shared yet.
        let router = Arc::try_unwrap(router).map_err(|_| CustodyError::Token {
            operation: "ConfiguredCustody::open_sealed",
            reason: "the router is shared".into(),
        })?;
        let router = router.with_sealed_software_keys(Arc::new(sealer.clone()));
        Ok((
            ConfiguredCustody {
                router: Arc::new(router),
                token,
                hpke_token,
            },
            sealer,
        ))
    }

    /// Opens the configuration that `HSMLS_PKCS11_CONFIG` names.
    pub fn open_from_env() -> Result<Self, CustodyError> {
        Self::open(&Pkcs11Config::from_env()?)
    }

    /// The router: the custody to give the MLS engine.
    pub fn router(&self) -> &Arc<CustodyRouter> {
        &self.router
    }

    /// The router as a `dyn KeyCustody`.
    pub fn custody(&self) -> Arc<dyn KeyCustody> {
        self.router.clone() as Arc<dyn KeyCustody>
    }

    /// The signature token.
    pub fn token(&self) -> &Arc<Pkcs11Custody> {
        &self.token
    }

    /// The HPKE token, if the configuration names one.
    pub fn hpke_token(&self) -> Option<&Arc<Pkcs11Custody>> {
        self.hpke_token.as_ref()
    }

    /// Where the state-sealing key lives, without creating it: the
    /// signature token if it can seal ([`Pkcs11Custody::can_seal`]), else
    /// the HPKE token if it can, else [`CustodyError::NoSealingHome`] with
    /// both reasons. Never process memory.
    pub fn seal_home(&self) -> Result<SealHome, CustodyError> {
        let first = match self.token.can_seal() {
            Ok(()) => return Ok(SealHome::Token),
            Err(CustodyError::SealingUnsupported(why)) => why,
            Err(e) => return Err(e),
        };
        match &self.hpke_token {
            None => Err(CustodyError::NoSealingHome(format!(
                "{first}, and no hpke_token is configured"
            ))),
            Some(h) => match h.can_seal() {
                Ok(()) => Ok(SealHome::HpkeToken),
                Err(CustodyError::SealingUnsupported(second)) => {
                    Err(CustodyError::NoSealingHome(format!("{first}; {second}")))
                }
                Err(e) => Err(e),
            },
        }
    }

    /// The state-sealing key in its home ([`seal_home`](Self::seal_home)),
    /// found or created there ([`Pkcs11Custody::state_sealer`]).
    pub fn state_sealer(&self) -> Result<Pkcs11Sealer, CustodyError> {
        match self.seal_home()? {
            SealHome::Token => self.token.state_sealer(),
            SealHome::HpkeToken => match &self.hpke_token {
                Some(h) => h.state_sealer(),
                None => Err(CustodyError::NoSealingHome("no hpke_token".into())),
            },
        }
    }
}
