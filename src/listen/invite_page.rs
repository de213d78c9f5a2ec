//! The invite landing page (XEP-0401's "landing page", as Prosody's invite pages): at
//! `/invite/{token}` someone without an account sees who invited them where, picks a
//! username and password and gets the account, with the same checks as in-band registration
//! (`crate::registration`); or opens the `xmpp:` link in a client that handles invites.
//! Plain HTML and a little inline CSS, no scripts, nothing loaded from elsewhere; everything
//! shown is escaped. The token in the form is the secret that makes the POST legitimate, so no
//! other CSRF token is needed.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::{ConnectInfo, Path, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Form, Router as HttpRouter};
use serde::Deserialize;

use crate::config::RegistrationMode;
use crate::invites::{self, Unusable};
use crate::registration::{self, NewAccount, RegistrationError};
use crate::storage::StoredInvite;
use crate::stream::context::StreamContext;

#[derive(Clone)]
struct PageState {
    ctx: Arc<StreamContext>,
    /// Served over TLS: the scheme of links derived from the request's `Host`.
    encrypted: bool,
}

/// The page's routes, for the HTTP and the HTTPS listener.
pub fn routes(ctx: Arc<StreamContext>, encrypted: bool) -> HttpRouter {
    HttpRouter::new()
        .route("/invite/{token}", get(show).post(submit))
        .with_state(PageState { ctx, encrypted })
}

#[derive(Deserialize)]
struct Submitted {
    #[serde(default)]
    username: String,
    #[serde(default)]
    password: String,
    #[serde(default)]
    password_again: String,
}

async fn show(
    State(state): State<PageState>,
    Path(token): Path<String>,
    headers: HeaderMap,
) -> Response {
    let invite = match lookup(&state, &token).await {
        Ok(invite) => invite,
        Err(response) => return response,
    };
    let view = View::new(&state, &invite, &headers);
    page(
        StatusCode::OK,
        "You are invited",
        &view.invitation(None, ""),
    )
}

async fn submit(
    State(state): State<PageState>,
    Path(token): Path<String>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    Form(form): Form<Submitted>,
) -> Response {
    let invite = match lookup(&state, &token).await {
        Ok(invite) => invite,
        Err(response) => return response,
    };
    let view = View::new(&state, &invite, &headers);
    if form.password != form.password_again {
        let body = view.invitation(Some("The two passwords differ."), &form.username);
        return page(StatusCode::BAD_REQUEST, "You are invited", &body);
    }
    let request = NewAccount {
        domain: &invite.domain,
        username: form.username.trim(),
        password: &form.password,
        token: Some(&token),
        source: peer.ip(),
    };
    let ctx = &state.ctx;
    match registration::register(&ctx.router, &ctx.registrations, request).await {
        Ok(account) => page(
            StatusCode::OK,
            "Your account is ready",
            &view.welcome(account.as_str()),
        ),
        Err(RegistrationError::Invite(why)) => unusable(why),
        Err(e) => {
            let status = match e {
                RegistrationError::Conflict => StatusCode::CONFLICT,
                RegistrationError::Closed | RegistrationError::InviteRequired => {
                    StatusCode::FORBIDDEN
                }
                RegistrationError::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
                RegistrationError::Limited(_) => StatusCode::TOO_MANY_REQUESTS,
                _ => StatusCode::BAD_REQUEST,
            };
            let body = view.invitation(Some(&sentence(&e.to_string())), &form.username);
            page(status, "You are invited", &body)
        }
    }
}

/// The invite if it can still be used, else the page saying why not.
async fn lookup(state: &PageState, token: &str) -> Result<StoredInvite, Response> {
    let now = crate::ids::now_ms() as i64;
    match invites::usable(state.ctx.router.storage(), token, now).await {
        Ok(Ok(invite)) => Ok(invite),
        Ok(Err(why)) => Err(unusable(why)),
        Err(e) => {
            tracing::warn!(error = %e, "invite page: storage failed");
            Err(page(
                StatusCode::SERVICE_UNAVAILABLE,
                "Try again later",
                "<p>The server cannot look this invite up right now. Please try again later.</p>",
            ))
        }
    }
}

fn unusable(why: Unusable) -> Response {
    let (status, text) = match why {
        Unusable::Unknown => (
            StatusCode::NOT_FOUND,
            "This invite link is not valid. Check that you copied all of it, or ask for a new one.",
        ),
        Unusable::Used => (
            StatusCode::GONE,
            "This invite has been used already. Each invite creates one account: ask for a new one.",
        ),
        Unusable::Expired => (
            StatusCode::GONE,
            "This invite has expired. Ask the person who sent it for a new one.",
        ),
    };
    page(
        status,
        "Invite not usable",
        &format!("<p class='error'>{}</p>", escape(text)),
    )
}

/// What the pages show of one invite.
struct View<'a> {
    invite: &'a StoredInvite,
    mode: RegistrationMode,
    uri: String,
    url: String,
}

impl<'a> View<'a> {
    fn new(state: &PageState, invite: &'a StoredInvite, headers: &HeaderMap) -> View<'a> {
        let config = &state.ctx.config;
        let scheme = if state.encrypted { "https" } else { "http" };
        let host = headers
            .get(header::HOST)
            .and_then(|h| h.to_str().ok())
            .filter(|h| is_host(h));
        let base = invites::public_base(config, host.map(|h| (scheme, h)), &invite.domain);
        View {
            invite,
            mode: config.registration_mode(&invite.domain),
            uri: invites::xmpp_uri(invite),
            url: invites::landing_url(&base, &invite.token),
        }
    }

    fn who(&self) -> String {
        match &self.invite.inviter {
            Some(inviter) => format!(
                "<strong>{}</strong> invites you to chat on <strong>{}</strong>",
                escape(inviter),
                escape(&self.invite.domain)
            ),
            None => format!(
                "You are invited to create an account on <strong>{}</strong>",
                escape(&self.invite.domain)
            ),
        }
    }

    /// The invitation: the app link, then the form (with `error` and the username typed).
    fn invitation(&self, error: Option<&str>, username: &str) -> String {
        let mut body = format!("<p>{}.</p>", self.who());
        body.push_str(&format!(
            "<h2>With an XMPP app</h2>\
             <p>Install an app such as Conversations (Android), Monal (iOS, macOS), Gajim \
             (Windows, Linux) or Dino (Linux), then open this link on the same device; the app \
             creates your account{}:</p>\
             <p><a class='button' href='{}'>Open in my XMPP app</a></p>\
             <p class='small'>Or copy it into the app: <code>{}</code></p>",
            if self.invite.roster {
                " and adds the person who invited you to your contacts"
            } else {
                ""
            },
            escape(&self.uri),
            escape(&self.uri),
        ));
        if self.mode == RegistrationMode::Closed {
            body.push_str("<p>Accounts cannot be created on this server right now.</p>");
            return body;
        }
        body.push_str("<h2>Or create your account here</h2>");
        if let Some(error) = error {
            body.push_str(&format!(
                "<p class='error' role='alert'>{}</p>",
                escape(error)
            ));
        }
        let (value, fixed) = match &self.invite.username {
            Some(name) => (name.as_str(), " readonly"),
            None => (username, ""),
        };
        body.push_str(&format!(
            "<form method='post' action='{}'>\
             <label for='username'>Username</label>\
             <div class='jid'><input id='username' name='username' required \
             autocomplete='username' autocapitalize='none' value='{}'{fixed}>\
             <span>@{}</span></div>\
             <label for='password'>Password</label>\
             <input id='password' name='password' type='password' required \
             autocomplete='new-password'>\
             <label for='password_again'>Password again</label>\
             <input id='password_again' name='password_again' type='password' required \
             autocomplete='new-password'>\
             <button type='submit'>Create my account</button>\
             </form>\
             <p class='small'>This page's address: <code>{}</code></p>",
            escape(&format!("{}{}", invites::PAGE_PATH, self.invite.token)),
            escape(value),
            escape(&self.invite.domain),
            escape(&self.url),
        ));
        body
    }

    /// After the account was created.
    fn welcome(&self, account: &str) -> String {
        format!(
            "<p>Your address is <strong class='jid-done'>{}</strong>.</p>\
             <p>Sign in with it and your password in any XMPP app (Conversations, Monal, Gajim, \
             Dino and others); the app finds the server from your address.{}</p>",
            escape(account),
            match &self.invite.inviter {
                Some(inviter) if self.invite.roster => format!(
                    " <strong>{}</strong> is already in your contacts.",
                    escape(inviter)
                ),
                _ => String::new(),
            }
        )
    }
}

/// A `Host` header worth echoing into links: a name or address and a port, nothing else.
fn is_host(host: &str) -> bool {
    !host.is_empty()
        && host.len() <= 255
        && host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-.:[]".contains(&b))
}

/// An error message as a sentence.
fn sentence(text: &str) -> String {
    let mut chars = text.chars();
    match chars.next() {
        Some(first) => format!("{}{}.", first.to_uppercase(), chars.as_str()),
        None => String::new(),
    }
}

/// Escapes text for HTML element content and quoted attribute values alike.
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

const STYLE: &str = "body{font-family:system-ui,sans-serif;max-width:34rem;margin:2rem auto;\
padding:0 1rem;line-height:1.5;color:#1d2733;background:#f7f8fa}\
h1{font-size:1.5rem}h2{font-size:1.1rem;margin-top:2rem}\
form{display:grid;gap:.4rem}input{font-size:1rem;padding:.5rem;border:1px solid #9aa5b1;\
border-radius:4px}.jid{display:flex;align-items:center;gap:.3rem}.jid input{flex:1}\
button,.button{display:inline-block;margin-top:.8rem;padding:.6rem 1rem;font-size:1rem;\
background:#2a6ad1;color:#fff;border:0;border-radius:4px;text-decoration:none;cursor:pointer}\
.error{color:#a01818;font-weight:600}.small{font-size:.85rem;color:#52606d}\
code{word-break:break-all}";

fn page(status: StatusCode, title: &str, body: &str) -> Response {
    let html = format!(
        "<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>\
         <meta name='viewport' content='width=device-width, initial-scale=1'>\
         <meta name='referrer' content='no-referrer'>\
         <title>{title}</title><style>{STYLE}</style></head>\
         <body><main><h1>{title}</h1>{body}</main></body></html>",
        title = escape(title),
    );
    let mut response = (status, html).into_response();
    let headers = response.headers_mut();
    let fixed = [
        (header::CONTENT_TYPE, "text/html; charset=utf-8"),
        // The token is in the URL: no caches, no referrers, no framing.
        (header::CACHE_CONTROL, "no-store"),
        (header::REFERRER_POLICY, "no-referrer"),
        (header::X_FRAME_OPTIONS, "DENY"),
        (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        (
            header::CONTENT_SECURITY_POLICY,
            "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'; \
             frame-ancestors 'none'",
        ),
    ];
    for (name, value) in fixed {
        headers.insert(name, HeaderValue::from_static(value));
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escaping_covers_markup_and_both_quotes() {
        assert_eq!(
            escape("<a href='x'>\"&</a>"),
            "&lt;a href=&#39;x&#39;&gt;&quot;&amp;&lt;/a&gt;"
        );
        assert!(is_host("chat.example.org:5281"));
        assert!(is_host("[::1]:80"));
        assert!(!is_host("evil.example/<script>"));
    }
}
