//! (being written)

use super::Core;
use soundgate_proto::wire::{ClientId, ErrorKind, Reply, Request, WireError};

impl Core {
    pub(super) fn admin_request(
        &self,
        _client: ClientId,
        req: Request,
    ) -> Result<Reply, WireError> {
        Err(WireError::new(
            ErrorKind::Internal,
            format!("{req:?}: being written"),
        ))
    }
}
