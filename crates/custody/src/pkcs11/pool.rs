//! A pool of logged-in read/write sessions.
//!
//! `cryptoki::Session` is `Send` but not `Sync`: one session runs one
//! operation at a time. Callers check a session out, use it alone, and it
//! returns to the pool on drop. Sessions are opened on demand up to the pool
//! size and are never closed while the custody lives (except broken ones),
//! because session objects (the unwrapped HPKE keys) die with the session
//! that created them.

use std::ops::Deref;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};

use cryptoki::session::Session;
use cryptoki::slot::Slot;

use super::module::Module;
use super::token_err;
use crate::CustodyError;

pub(crate) struct SessionPool {
    module: Arc<Module>,
    slot: Slot,
    max: usize,
    state: Mutex<PoolState>,
    available: Condvar,
}

struct PoolState {
    idle: Vec<Session>,
    open: usize,
}

impl SessionPool {
    /// A pool whose first session is `first` (already logged in).
    pub(crate) fn new(module: Arc<Module>, slot: Slot, max: usize, first: Session) -> Self {
        SessionPool {
            module,
            slot,
            max: max.max(1),
            state: Mutex::new(PoolState {
                idle: vec![first],
                open: 1,
            }),
            available: Condvar::new(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, PoolState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Checks out a session, opening one if none is idle and the pool is not
    /// full, else waiting for one.
    pub(crate) fn get(&self) -> Result<PooledSession<'_>, CustodyError> {
        let mut state = self.lock();
        loop {
            if let Some(session) = state.idle.pop() {
                return Ok(PooledSession {
                    pool: self,
                    session: Some(session),
                });
            }
            if state.open < self.max {
                state.open += 1;
                drop(state);
                // The process is logged in: new sessions share the login.
                return match self.module.pkcs11.open_rw_session(self.slot) {
                    Ok(session) => Ok(PooledSession {
                        pool: self,
                        session: Some(session),
                    }),
                    Err(e) => {
                        self.lock().open -= 1;
                        self.available.notify_one();
                        Err(token_err("C_OpenSession", e))
                    }
                };
            }
            state = self
                .available
                .wait(state)
                .unwrap_or_else(|e| e.into_inner());
        }
    }

    /// Number of sessions currently open.
    pub(crate) fn open_sessions(&self) -> usize {
        self.lock().open
    }

    /// Takes all sessions out (for closing); callers must hold no session.
    pub(crate) fn drain(&self) -> Vec<Session> {
        let mut state = self.lock();
        state.open = 0;
        std::mem::take(&mut state.idle)
    }
}

/// A checked-out session; returns to the pool on drop.
pub(crate) struct PooledSession<'a> {
    pool: &'a SessionPool,
    session: Option<Session>,
}

impl PooledSession<'_> {
    /// Closes this session instead of returning it (after an error that
    /// shows the session is unusable).
    pub(crate) fn discard(mut self) {
        if let Some(s) = self.session.take() {
            drop(s);
            self.pool.lock().open -= 1;
            self.pool.available.notify_one();
        }
    }
}

impl Deref for PooledSession<'_> {
    type Target = Session;
    fn deref(&self) -> &Session {
        // Present until drop or discard, which consume the value.
        match &self.session {
            Some(s) => s,
            None => unreachable!("a PooledSession holds its session until dropped"),
        }
    }
}

impl Drop for PooledSession<'_> {
    fn drop(&mut self) {
        if let Some(s) = self.session.take() {
            self.pool.lock().idle.push(s);
            self.pool.available.notify_one();
        }
    }
}
