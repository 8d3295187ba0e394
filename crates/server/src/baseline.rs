//! The server with access control taken out, for one purpose only: `tsunagi bench search`
//! prints what authorisation, consent filtering and auditing cost by timing the same queries
//! against this router. Compiled only with the `bench-baseline` feature, which no released
//! build enables; a tidy test checks that nothing else names this module.

use std::sync::Arc;

use axum::{Router, extract::Request, middleware::Next, response::Response};
use tsunagi_auth::{Principal, Role, Scopes, SubjectKind};
use tsunagi_store::governance::Access;

use crate::{AppState, security::Caller};

/// The routes of [`crate::router`], where every request reads as an unrestricted system client:
/// no token is checked, the store filters nothing and nothing is audited.
pub fn open_router(state: Arc<AppState>) -> Router {
    let open = crate::routes::protected_routes(&state).route_layer(axum::middleware::from_fn(open));
    crate::routes::assemble(state, open)
}

/// Serves [`open_router`] on a bound listener until `shutdown` completes.
pub async fn serve_open(
    listener: tokio::net::TcpListener,
    state: Arc<AppState>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, open_router(state))
        .with_graceful_shutdown(shutdown)
        .await
}

async fn open(mut request: Request, next: Next) -> Response {
    let principal = Principal {
        subject: "baseline".to_owned(),
        client_id: "baseline".to_owned(),
        kind: SubjectKind::System,
        facility: String::new(),
        role: Role::System,
        scopes: Scopes::parse("system/*.rs").unwrap_or_default(),
        token_id: String::new(),
        issued_at: 0,
        expires_at: 0,
    };
    request
        .extensions_mut()
        .insert(Arc::new(Caller::new(principal, Access::Unrestricted)));
    next.run(request).await
}
