//! Single sign-on with OpenID Connect (the `openidconnect` crate): the authorization code flow
//! with PKCE, `state` and `nonce` bound to a short-lived pre-session, every ID token check
//! (issuer, audience, `azp`, expiry, issue time, signature against the provider's JWKS,
//! refetched once on an unknown `kid`), the user matched by the provider's `sub`, and the
//! user's groups replaced by the provider's at every sign-in.
//!
//! The pre-session is the browser's own (tower) session: [`start_sign_in`] stores a
//! [`PendingSignIn`] in it, [`finish_sign_in`] takes it out (once: a replayed callback finds
//! nothing) and, on success, rotates the session id and signs the user in.

use openidconnect::core::{
    CoreClient, CoreGenderClaim, CoreJweContentEncryptionAlgorithm, CoreJwsSigningAlgorithm,
    CoreProviderMetadata, CoreResponseType,
};
use openidconnect::{
    reqwest, AccessTokenHash, AdditionalClaims, AuthenticationFlow, AuthorizationCode,
    ClaimsVerificationError, ClientId, ClientSecret, CsrfToken, EndpointMaybeSet, EndpointNotSet,
    EndpointSet, IdToken, IdTokenClaims, IssuerUrl, Nonce, OAuth2TokenResponse, PkceCodeChallenge,
    PkceCodeVerifier, RedirectUrl, Scope, SignatureVerificationError, TokenResponse,
    UserInfoClaims,
};
use sea_orm::{
    ActiveModelTrait, ColumnTrait, ConnectionTrait, EntityTrait, IntoActiveModel, QueryFilter,
    QueryOrder, Set,
};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};
use tower_sessions::{Expiry, Session};

use super::accounts as user_store;
use crate::access::Principal;
use crate::audit::{Actor, AuditEvent, AuditKind, Outcome, RequestMeta, SessionType};
use crate::bootstrap::ALL_USERS_GROUP;
use crate::clock::Timestamp;
use crate::dto::{GroupMappingMode, IdentityProviderTest, SignInProvider, SsoFailure};
use crate::entities::{group_members, groups, identity_providers, user_identities, users};
use crate::error::{DomainError, DomainResult};
use crate::secrets::{ct_eq, Sealer, Secret};
use crate::types::{DisplayName, Email};
use crate::Services;

/// The session key of a sign-in in progress.
pub const PENDING_KEY: &str = "warden.oidc";
/// How long a sign-in may take at the provider.
pub const PENDING_TTL_SECS: i64 = 600;
/// How long a provider's discovery document and keys are kept before being fetched again.
const METADATA_TTL: Duration = Duration::from_secs(3600);
/// How far in the future an ID token's `iat` may be (clock skew).
const MAX_IAT_SKEW_SECS: i64 = 300;
pub const ORIGIN_SSO: &str = crate::dto::UserOrigin::Sso.as_str();
/// `amr` values (RFC 8176) that say several factors were used, on their own.
pub const MULTI_FACTOR_AMR: [&str; 2] = ["mfa", "mca"];
/// `amr` values (RFC 8176) of something one has: a one-time password, proof of possession of a
/// hardware or software key, SMS or telephone confirmation, a smart card. One of them counts
/// as a second factor only beside something one knows or is ([`FIRST_FACTOR_AMR`]): a
/// passwordless sign-in with an SMS code, a mailed one-time code or a bare security key is
/// one factor.
pub const POSSESSION_AMR: [&str; 6] = ["otp", "hwk", "swk", "sms", "tel", "sc"];
/// `amr` values of something one knows or is: a password, a PIN, a biometric, user presence
/// verified by the authenticator.
pub const FIRST_FACTOR_AMR: [&str; 12] = [
    "pwd", "pin", "kba", "fpt", "face", "iris", "retina", "vbm", "geo", "user", "wia", "pop",
];

/// How long, by default, a provider's word about one of its users holds for credentials used
/// without a console session (`WARDEN_SSO_REVALIDATE_HOURS`).
pub const DEFAULT_REVALIDATE_HOURS: i64 = 168;

/// Until when (ms) an API key or a kubeconfig of `user_id` may be used, as far as the identity
/// providers linked to them go: a provider vouches for its user (that the account still
/// exists there, and its groups, which Warden replaces) only at a sign-in through it, so a
/// credential used without a session must not outlive that word for long. Someone removed
/// from a group, or from the provider, who never signs in through it again would otherwise
/// keep the group's rights through a year-long key. `None`: the user is linked to no provider.
pub async fn vouched_until<C: ConnectionTrait>(
    svc: &Services,
    db: &C,
    user_id: &str,
) -> DomainResult<Option<i64>> {
    let last = user_identities::Entity::find()
        .filter(user_identities::Column::UserId.eq(user_id))
        .all(db)
        .await?
        .into_iter()
        .map(|l| l.last_login_at.unwrap_or(l.created_at))
        .max();
    Ok(last.map(|t| t + svc.sso.revalidate_ms()))
}

/// How a single sign-on ended.
#[derive(Debug)]
pub enum SsoSignIn {
    /// Signed in: the session id rotated.
    SignedIn(users::Model),
    /// The provider's sign-in passed; Warden's own second factor is due (`/login/mfa`).
    MfaRequired,
}

/// Whether an ID token's `amr` values say a second factor was used: `mfa`/`mca`, or something
/// one has beside something one knows or is.
pub fn amr_has_second_factor<S: AsRef<str>>(amr: &[S]) -> bool {
    let amr: Vec<String> = amr
        .iter()
        .map(|a| a.as_ref().to_ascii_lowercase())
        .collect();
    let any = |set: &[&str]| amr.iter().any(|a| set.contains(&a.as_str()));
    any(&MULTI_FACTOR_AMR) || (any(&POSSESSION_AMR) && any(&FIRST_FACTOR_AMR))
}

/// Claims beyond the standard ones (groups, or an email under another name), by name.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ExtraClaims {
    #[serde(flatten)]
    pub rest: serde_json::Map<String, Value>,
}
impl AdditionalClaims for ExtraClaims {}

type ExtraIdToken = IdToken<
    ExtraClaims,
    CoreGenderClaim,
    CoreJweContentEncryptionAlgorithm,
    CoreJwsSigningAlgorithm,
>;
type Claims = IdTokenClaims<ExtraClaims, CoreGenderClaim>;
type Client = CoreClient<
    EndpointSet,
    EndpointNotSet,
    EndpointNotSet,
    EndpointNotSet,
    EndpointMaybeSet,
    EndpointMaybeSet,
>;

/// A sign-in in progress, kept in the browser's pre-session until the provider sends it back.
#[derive(Clone, Serialize, Deserialize)]
pub struct PendingSignIn {
    pub provider_id: String,
    pub state: String,
    pub nonce: String,
    pub pkce_verifier: String,
    pub started_at: Timestamp,
}

impl std::fmt::Debug for PendingSignIn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PendingSignIn")
            .field("provider_id", &self.provider_id)
            .field("started_at", &self.started_at)
            .finish_non_exhaustive()
    }
}

struct CachedMetadata {
    issuer: String,
    fetched_at: Instant,
    metadata: CoreProviderMetadata,
}

/// What single sign-on needs from the running server: the master key's sealer (set at
/// start-up), an HTTP client that follows no redirects, and the providers' discovery cache.
#[derive(Default)]
pub struct SsoHooks {
    sealer: OnceLock<Sealer>,
    /// How long a provider's word about a user holds for API keys and kubeconfigs (ms).
    revalidate_ms: OnceLock<i64>,
    http: OnceLock<reqwest::Client>,
    metadata: Mutex<HashMap<String, CachedMetadata>>,
}

impl SsoHooks {
    pub fn set_sealer(&self, sealer: Sealer) {
        let _ = self.sealer.set(sealer);
    }

    /// Set at start-up (`WARDEN_SSO_REVALIDATE_HOURS`).
    pub fn set_revalidate(&self, d: Duration) {
        let _ = self.revalidate_ms.set(d.as_millis() as i64);
    }

    fn revalidate_ms(&self) -> i64 {
        self.revalidate_ms
            .get()
            .copied()
            .unwrap_or(DEFAULT_REVALIDATE_HOURS * 3_600_000)
    }

    pub(crate) fn sealer(&self) -> Option<&Sealer> {
        self.sealer.get()
    }

    fn http(&self) -> &reqwest::Client {
        self.http.get_or_init(|| {
            reqwest::Client::builder()
                // Following redirects would open the client to SSRF.
                .redirect(reqwest::redirect::Policy::none())
                .timeout(Duration::from_secs(10))
                .build()
                .expect("an HTTP client with default TLS settings")
        })
    }

    /// Drop a provider's cached discovery document (its issuer changed, or it was deleted).
    pub fn forget(&self, provider_id: &str) {
        if let Ok(mut m) = self.metadata.lock() {
            m.remove(provider_id);
        }
    }

    async fn discover(&self, issuer: &str) -> Result<CoreProviderMetadata, String> {
        let url = IssuerUrl::new(issuer.to_owned())
            .map_err(|e| format!("the issuer URL is not valid: {e}"))?;
        CoreProviderMetadata::discover_async(url, self.http())
            .await
            .map_err(|e| format!("discovery failed: {}", error_chain(&e)))
    }

    /// The provider's discovery document and keys: cached, or fetched when `refresh`.
    async fn metadata(&self, p: &Provider, refresh: bool) -> Result<CoreProviderMetadata, String> {
        if !refresh {
            if let Ok(m) = self.metadata.lock() {
                if let Some(c) = m.get(&p.id) {
                    if c.issuer == p.issuer && c.fetched_at.elapsed() < METADATA_TTL {
                        return Ok(c.metadata.clone());
                    }
                }
            }
        }
        let metadata = self.discover(&p.issuer).await?;
        if let Ok(mut m) = self.metadata.lock() {
            m.insert(
                p.id.clone(),
                CachedMetadata {
                    issuer: p.issuer.clone(),
                    fetched_at: Instant::now(),
                    metadata: metadata.clone(),
                },
            );
        }
        Ok(metadata)
    }
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        let s = c.to_string();
        if !out.contains(&s) {
            out.push_str(": ");
            out.push_str(&s);
        }
        cur = c.source();
    }
    out
}

/// How provider groups become Warden groups.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GroupMapping {
    /// A provider group joins the Warden group of the same name (any group but the built-ins).
    ByName,
    /// Provider group -> Warden group.
    Explicit(BTreeMap<String, String>),
}

/// An identity provider's settings, parsed.
#[derive(Debug, Clone)]
pub struct Provider {
    pub id: String,
    pub name: String,
    pub display_name: String,
    pub issuer: String,
    pub client_id: String,
    sealed_secret: String,
    pub scopes: Vec<String>,
    pub email_claim: String,
    pub name_claim: String,
    pub groups_claim: String,
    pub allowed_domains: Vec<String>,
    pub mapping: GroupMapping,
    pub auto_provision: bool,
    pub link_existing_users: bool,
    pub enabled: bool,
    pub trust_provider_mfa: bool,
}

/// The purpose a client secret is sealed for (bound to its provider).
pub(crate) fn secret_purpose(provider_id: &str) -> String {
    format!("identity_providers.client_secret:{provider_id}")
}

impl Provider {
    pub fn from_model(m: &identity_providers::Model) -> Self {
        let mapping =
            if GroupMappingMode::from_stored(&m.group_mapping_mode) == GroupMappingMode::Explicit {
                GroupMapping::Explicit(serde_json::from_str(&m.group_mapping).unwrap_or_default())
            } else {
                GroupMapping::ByName
            };
        Self {
            id: m.id.clone(),
            name: m.name.clone(),
            display_name: m.display_name.clone(),
            issuer: m.issuer.clone(),
            client_id: m.client_id.clone(),
            sealed_secret: m.client_secret.clone(),
            scopes: m.scopes.split_whitespace().map(str::to_owned).collect(),
            email_claim: m.email_claim.clone(),
            name_claim: m.name_claim.clone(),
            groups_claim: m.groups_claim.clone(),
            allowed_domains: serde_json::from_str(&m.allowed_domains).unwrap_or_default(),
            mapping,
            auto_provision: m.auto_provision,
            link_existing_users: m.link_existing_users,
            enabled: m.enabled,
            trust_provider_mfa: m.trust_provider_mfa,
        }
    }

    /// The client secret, opened with the master key when it is sealed.
    fn client_secret(&self, svc: &Services) -> Result<Secret, String> {
        if !Sealer::is_sealed(&self.sealed_secret) {
            return Ok(Secret::new(self.sealed_secret.clone()));
        }
        let sealer = svc
            .sso
            .sealer()
            .ok_or("the client secret is sealed but WARDEN_MASTER_KEY is not set")?;
        let plain = sealer
            .open(&secret_purpose(&self.id), &self.sealed_secret)
            .map_err(|e| format!("cannot open the client secret: {e}"))?;
        String::from_utf8(plain)
            .map(Secret::new)
            .map_err(|_| "the client secret is not UTF-8".to_owned())
    }

    fn client(
        &self,
        svc: &Services,
        metadata: CoreProviderMetadata,
        secret: &Secret,
    ) -> Result<Client, String> {
        let redirect = RedirectUrl::new(callback_url(&svc.public_url, &self.name))
            .map_err(|e| format!("the callback URL is not valid: {e}"))?;
        Ok(CoreClient::from_provider_metadata(
            metadata,
            ClientId::new(self.client_id.clone()),
            Some(ClientSecret::new(secret.expose().to_owned())),
        )
        .set_redirect_uri(redirect))
    }
}

/// The redirect URI registered at the provider.
pub fn callback_url(public_url: &str, provider_name: &str) -> String {
    format!(
        "{}/api/v1/auth/oidc/{provider_name}/callback",
        public_url.trim_end_matches('/')
    )
}

/// Where a browser starts signing in with a provider.
pub fn login_path(provider_name: &str) -> String {
    format!("/api/v1/auth/oidc/{provider_name}/login")
}

async fn find_enabled<C: ConnectionTrait>(db: &C, name: &str) -> DomainResult<Option<Provider>> {
    Ok(identity_providers::Entity::find()
        .filter(identity_providers::Column::Name.eq(name))
        .filter(identity_providers::Column::Enabled.eq(true))
        .one(db)
        .await?
        .map(|m| Provider::from_model(&m)))
}

/// The sign-in page's buttons: every enabled provider (no authentication needed).
pub async fn sign_in_providers(svc: &Services) -> DomainResult<Vec<SignInProvider>> {
    Ok(identity_providers::Entity::find()
        .filter(identity_providers::Column::Enabled.eq(true))
        .order_by_asc(identity_providers::Column::DisplayName)
        .all(&svc.db)
        .await?
        .into_iter()
        .map(|m| SignInProvider {
            login_url: login_path(&m.name),
            name: m.name,
            display_name: m.display_name,
        })
        .collect())
}

/// Run discovery against an issuer and say what was found, or what went wrong, in words.
pub async fn test_issuer(svc: &Services, issuer: &str) -> IdentityProviderTest {
    match svc.sso.discover(issuer).await {
        Ok(m) => IdentityProviderTest {
            ok: true,
            message: format!(
                "Discovery succeeded: {} signing key(s) published.",
                m.jwks().keys().len()
            ),
            authorization_endpoint: Some(m.authorization_endpoint().to_string()),
            token_endpoint: m.token_endpoint().map(|u| u.to_string()),
            userinfo_endpoint: m.userinfo_endpoint().map(|u| u.to_string()),
            jwks_uri: Some(m.jwks_uri().to_string()),
            signing_keys: m.jwks().keys().len(),
            scopes_supported: m
                .scopes_supported()
                .map(|s| s.iter().map(|s| s.to_string()).collect())
                .unwrap_or_default(),
        },
        Err(message) => IdentityProviderTest {
            ok: false,
            message,
            authorization_endpoint: None,
            token_endpoint: None,
            userinfo_endpoint: None,
            jwks_uri: None,
            signing_keys: 0,
            scopes_supported: vec![],
        },
    }
}

/// Start signing in with `provider_name`: the pre-session keeps `state`, `nonce` and the PKCE
/// verifier; the answer is the provider's authorization URL to send the browser to.
pub async fn start_sign_in(
    svc: &Services,
    session: &Session,
    provider_name: &str,
) -> Result<String, SsoFailure> {
    let provider = match find_enabled(&svc.db, provider_name).await {
        Ok(Some(p)) => p,
        Ok(None) => return Err(SsoFailure::UnknownProvider),
        Err(e) => {
            tracing::error!(error = %e, "cannot load an identity provider");
            return Err(SsoFailure::Internal);
        }
    };
    let prepared = async {
        let secret = provider.client_secret(svc)?;
        let metadata = svc.sso.metadata(&provider, false).await?;
        provider.client(svc, metadata, &secret)
    }
    .await;
    let client = prepared.map_err(|reason| {
        tracing::warn!(provider = %provider.name, %reason, "cannot start a single sign-on");
        SsoFailure::Unavailable
    })?;
    let (challenge, verifier) = PkceCodeChallenge::new_random_sha256();
    let mut request = client
        .authorize_url(
            AuthenticationFlow::<CoreResponseType>::AuthorizationCode,
            CsrfToken::new_random,
            Nonce::new_random,
        )
        .set_pkce_challenge(challenge);
    for s in provider.scopes.iter().filter(|s| s.as_str() != "openid") {
        request = request.add_scope(Scope::new(s.clone()));
    }
    let (url, state, nonce) = request.url();
    let now = svc.clock.now();
    let pending = PendingSignIn {
        provider_id: provider.id.clone(),
        state: state.secret().clone(),
        nonce: nonce.secret().clone(),
        pkce_verifier: verifier.secret().clone(),
        started_at: now,
    };
    let stored = async {
        let signed_in = session
            .get::<crate::identity::sessions::AuthRecord>(crate::identity::sessions::AUTH_KEY)
            .await?
            .is_some();
        session.insert(PENDING_KEY, &pending).await?;
        if !signed_in {
            // A pre-session only lives as long as a sign-in may take.
            session.set_expiry(Some(Expiry::AtDateTime(
                now.plus_secs(PENDING_TTL_SECS).to_offset(),
            )));
        }
        Ok::<_, tower_sessions::session::Error>(())
    }
    .await;
    if let Err(e) = stored {
        tracing::error!(error = %e, "cannot store a sign-in in progress");
        return Err(SsoFailure::Internal);
    }
    Ok(url.to_string())
}

/// What the provider sent back to the callback.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct CallbackParams {
    pub code: Option<String>,
    pub state: Option<String>,
    pub error: Option<String>,
    pub error_description: Option<String>,
}

struct Refusal {
    failure: SsoFailure,
    reason: String,
    claimed: String,
}

fn refuse(failure: SsoFailure, reason: impl Into<String>) -> Refusal {
    Refusal {
        failure,
        reason: reason.into(),
        claimed: String::new(),
    }
}

impl From<DomainError> for Refusal {
    fn from(e: DomainError) -> Self {
        tracing::error!(error = %e, "single sign-on failed on our side");
        refuse(SsoFailure::Internal, "internal error")
    }
}

impl From<sea_orm::DbErr> for Refusal {
    fn from(e: sea_orm::DbErr) -> Self {
        DomainError::from(e).into()
    }
}

/// The groups a sign-in added and removed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GroupChanges {
    pub added: Vec<String>,
    pub removed: Vec<String>,
    /// Groups the provider no longer names that the user stays in: leaving them would leave
    /// the organization without an administrator.
    pub kept: Vec<String>,
}

/// Finish a sign-in at the callback: check the pre-session, exchange the code, verify the ID
/// token, find or provision the user, replace their mapped groups, and sign them in (the
/// session id rotates). Every outcome is audited (kind `sign_in`, with the provider).
pub async fn finish_sign_in(
    svc: &Services,
    session: &Session,
    provider_name: &str,
    params: CallbackParams,
    meta: RequestMeta,
) -> Result<SsoSignIn, SsoFailure> {
    // Taken out at once: a replayed or second callback finds no sign-in in progress.
    let pending = match session.remove::<PendingSignIn>(PENDING_KEY).await {
        Ok(p) => p,
        Err(e) => {
            tracing::warn!(error = %e, "unreadable sign-in in progress");
            None
        }
    };
    match callback(svc, session, provider_name, params, pending, &meta).await {
        Ok(done) => Ok(done),
        Err(r) => {
            let ev = AuditEvent::new(
                AuditKind::SignIn,
                Actor::Anonymous { claimed: r.claimed },
                SessionType::Browser,
                "sign_in",
                Outcome::Denied,
            )
            .resource("identity_provider", provider_name)
            .reason(r.reason)
            .request(meta)
            .details(
                json!({"provider": provider_name, "method": "oidc", "failure": r.failure.code()}),
            );
            if let Err(e) = svc.record_refusal(ev).await {
                tracing::error!(error = %e, "could not audit a refused single sign-on");
            }
            Err(r.failure)
        }
    }
}

/// The verified claims Warden uses.
struct Identity {
    subject: String,
    email: Option<String>,
    email_verified: Option<bool>,
    name: Option<String>,
    groups: Option<Vec<String>>,
}

fn claim_str(extra: &ExtraClaims, name: &str) -> Option<String> {
    extra
        .rest
        .get(name)
        .and_then(Value::as_str)
        .map(str::to_owned)
}

fn claim_groups(extra: &ExtraClaims, name: &str) -> Option<Vec<String>> {
    match extra.rest.get(name)? {
        Value::Array(items) => Some(
            items
                .iter()
                .filter_map(Value::as_str)
                .map(str::to_owned)
                .collect(),
        ),
        Value::String(s) => Some(vec![s.clone()]),
        _ => None,
    }
}

impl Identity {
    fn from_id_token(p: &Provider, c: &Claims) -> Self {
        let extra = c.additional_claims();
        // `email` and `preferred_username` are standard claims (parsed apart from the others).
        let email = claim_str(extra, &p.email_claim).or_else(|| match p.email_claim.as_str() {
            "email" => c.email().map(|e| e.to_string()),
            "preferred_username" => c.preferred_username().map(|u| u.to_string()),
            _ => None,
        });
        let standard = claim_str(extra, "email").or_else(|| c.email().map(|e| e.to_string()));
        let verified = extra
            .rest
            .get("email_verified")
            .and_then(Value::as_bool)
            .or(c.email_verified());
        Self {
            subject: c.subject().to_string(),
            email_verified: verified_for(email.as_deref(), standard.as_deref(), verified),
            email,
            name: claim_str(extra, &p.name_claim).or_else(|| {
                (p.name_claim == "name")
                    .then(|| c.name().and_then(|n| n.get(None)).map(|n| n.to_string()))
                    .flatten()
            }),
            groups: claim_groups(extra, &p.groups_claim),
        }
    }

    /// Fill in what the ID token lacked from the userinfo answer.
    fn merge_userinfo(&mut self, p: &Provider, u: &UserInfoClaims<ExtraClaims, CoreGenderClaim>) {
        let extra = u.additional_claims();
        if self.email.is_none() {
            self.email =
                claim_str(extra, &p.email_claim).or_else(|| match p.email_claim.as_str() {
                    "email" => u.email().map(|e| e.to_string()),
                    "preferred_username" => u.preferred_username().map(|n| n.to_string()),
                    _ => None,
                });
            let standard = claim_str(extra, "email").or_else(|| u.email().map(|e| e.to_string()));
            let verified = extra
                .rest
                .get("email_verified")
                .and_then(Value::as_bool)
                .or(u.email_verified());
            self.email_verified =
                verified_for(self.email.as_deref(), standard.as_deref(), verified);
        }
        if self.name.is_none() {
            self.name = claim_str(extra, &p.name_claim).or_else(|| {
                (p.name_claim == "name")
                    .then(|| u.name().and_then(|n| n.get(None)).map(|n| n.to_string()))
                    .flatten()
            });
        }
        if self.groups.is_none() {
            self.groups = claim_groups(extra, &p.groups_claim);
        }
    }
}

/// What the provider's `email_verified` says of the email Warden reads. It speaks of the
/// standard `email` claim only: an email read from another claim (`email_claim`, e.g.
/// `preferred_username` or `upn`, which on some providers the user chooses) counts as verified
/// only when it is that verified email; otherwise nothing is known of it (`None`), which is
/// not enough to link an existing account or to provision under allowed domains.
fn verified_for(
    email: Option<&str>,
    standard: Option<&str>,
    verified: Option<bool>,
) -> Option<bool> {
    match (email, standard) {
        (Some(e), Some(s)) if e.trim().eq_ignore_ascii_case(s.trim()) => verified,
        _ => None,
    }
}

fn unix_now_secs() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

/// Verify the ID token (issuer, audience and `azp`, expiry, issue time, signature, nonce) and
/// its `at_hash` when present.
fn verify(
    client: &Client,
    id_token: &ExtraIdToken,
    nonce: &Nonce,
    access_token: &openidconnect::AccessToken,
) -> Result<Claims, ClaimsVerificationError> {
    let verifier = client
        .id_token_verifier()
        .set_issue_time_verifier_fn(|iat| {
            if iat.timestamp() > unix_now_secs() + MAX_IAT_SKEW_SECS {
                Err("the token was issued in the future".to_owned())
            } else {
                Ok(())
            }
        });
    let claims = id_token.claims(&verifier, nonce)?.clone();
    if let Some(expected) = claims.access_token_hash() {
        let alg = id_token
            .signing_alg()
            .map_err(ClaimsVerificationError::SignatureVerification)?;
        let key = id_token
            .signing_key(&verifier)
            .map_err(ClaimsVerificationError::SignatureVerification)?;
        let actual = AccessTokenHash::from_token(access_token, alg, key)
            .map_err(|e| ClaimsVerificationError::Other(format!("at_hash: {e}")))?;
        if actual != *expected {
            return Err(ClaimsVerificationError::Other(
                "the at_hash claim does not match the access token".into(),
            ));
        }
    }
    Ok(claims)
}

async fn callback(
    svc: &Services,
    session: &Session,
    provider_name: &str,
    params: CallbackParams,
    pending: Option<PendingSignIn>,
    meta: &RequestMeta,
) -> Result<SsoSignIn, Refusal> {
    let provider = find_enabled(&svc.db, provider_name).await?.ok_or_else(|| {
        refuse(
            SsoFailure::UnknownProvider,
            "no enabled identity provider has this name",
        )
    })?;
    if let Some(error) = params.error.as_deref() {
        let description: String = params
            .error_description
            .as_deref()
            .unwrap_or("")
            .chars()
            .take(300)
            .collect();
        let failure = if error == "access_denied" {
            SsoFailure::ProviderDenied
        } else {
            SsoFailure::ProviderError
        };
        let error: String = error.chars().take(64).collect();
        return Err(refuse(
            failure,
            format!("the provider answered {error}: {description}"),
        ));
    }
    let pending = pending.ok_or_else(|| {
        refuse(
            SsoFailure::State,
            "no sign-in in progress in this browser session (never started, or already used)",
        )
    })?;
    if pending.provider_id != provider.id {
        return Err(refuse(
            SsoFailure::State,
            "the sign-in in progress was started with another provider",
        ));
    }
    let now = svc.clock.now();
    if now.millis() - pending.started_at.millis() > PENDING_TTL_SECS * 1000 {
        return Err(refuse(
            SsoFailure::State,
            format!("the sign-in was started more than {PENDING_TTL_SECS} s ago"),
        ));
    }
    if !ct_eq(params.state.as_deref().unwrap_or(""), &pending.state) {
        return Err(refuse(
            SsoFailure::State,
            "the state parameter does not match this browser's sign-in",
        ));
    }
    let code = params
        .code
        .filter(|c| !c.is_empty())
        .ok_or_else(|| refuse(SsoFailure::ProviderError, "no authorization code"))?;

    let secret = provider
        .client_secret(svc)
        .map_err(|e| refuse(SsoFailure::Unavailable, e))?;
    let metadata = svc
        .sso
        .metadata(&provider, false)
        .await
        .map_err(|e| refuse(SsoFailure::Unavailable, e))?;
    let mut client = provider
        .client(svc, metadata, &secret)
        .map_err(|e| refuse(SsoFailure::Unavailable, e))?;
    let token = client
        .exchange_code(AuthorizationCode::new(code))
        .map_err(|e| refuse(SsoFailure::Unavailable, e.to_string()))?
        .set_pkce_verifier(PkceCodeVerifier::new(pending.pkce_verifier))
        .request_async(svc.sso.http())
        .await
        .map_err(|e| {
            refuse(
                SsoFailure::Token,
                format!("the token endpoint refused the code: {}", error_chain(&e)),
            )
        })?;
    let raw_id_token = token
        .id_token()
        .ok_or_else(|| refuse(SsoFailure::Token, "the token response has no ID token"))?
        .to_string();
    let id_token: ExtraIdToken = raw_id_token
        .parse()
        .map_err(|e| refuse(SsoFailure::Token, format!("the ID token is malformed: {e}")))?;
    let nonce = Nonce::new(pending.nonce);
    let claims = match verify(&client, &id_token, &nonce, token.access_token()) {
        Err(ClaimsVerificationError::SignatureVerification(
            SignatureVerificationError::NoMatchingKey,
        )) => {
            // The provider may have rotated its keys: fetch them again, once.
            let metadata = svc
                .sso
                .metadata(&provider, true)
                .await
                .map_err(|e| refuse(SsoFailure::Unavailable, e))?;
            client = provider
                .client(svc, metadata, &secret)
                .map_err(|e| refuse(SsoFailure::Unavailable, e))?;
            verify(&client, &id_token, &nonce, token.access_token())
        }
        other => other,
    }
    .map_err(|e| {
        refuse(
            SsoFailure::Token,
            format!("the ID token was refused: {}", error_chain(&e)),
        )
    })?;

    let mut identity = Identity::from_id_token(&provider, &claims);
    let wants_groups = !provider.groups_claim.is_empty();
    if identity.email.is_none() || (wants_groups && identity.groups.is_none()) {
        // The ID token lacks claims: ask the userinfo endpoint, when there is one.
        if let Ok(request) =
            client.user_info(token.access_token().clone(), Some(claims.subject().clone()))
        {
            let info: UserInfoClaims<ExtraClaims, CoreGenderClaim> =
                request.request_async(svc.sso.http()).await.map_err(|e| {
                    refuse(
                        SsoFailure::Token,
                        format!("the userinfo endpoint failed: {}", error_chain(&e)),
                    )
                })?;
            identity.merge_userinfo(&provider, &info);
        }
    }
    let claimed = identity
        .email
        .clone()
        .unwrap_or_else(|| format!("sub {}", identity.subject));
    let with_claimed = |mut r: Refusal| {
        r.claimed = claimed.clone();
        r
    };
    let raw_email = identity.email.clone().ok_or_else(|| {
        with_claimed(refuse(
            SsoFailure::MissingEmail,
            format!(
                "no {} claim in the ID token or userinfo",
                provider.email_claim
            ),
        ))
    })?;
    if identity.email_verified == Some(false) {
        return Err(with_claimed(refuse(
            SsoFailure::EmailUnverified,
            "the provider says the email is not verified",
        )));
    }
    let email = Email::parse(&raw_email).map_err(|e| {
        with_claimed(refuse(
            SsoFailure::MissingEmail,
            format!("the email claim is not an email address: {}", e.0),
        ))
    })?;
    let domain = email
        .as_str()
        .rsplit_once('@')
        .map(|(_, d)| d.to_owned())
        .unwrap_or_default();
    if !provider.allowed_domains.is_empty() && !provider.allowed_domains.contains(&domain) {
        return Err(with_claimed(refuse(
            SsoFailure::Domain,
            format!("the email domain {domain} is not among the provider's allowed domains"),
        )));
    }

    // What this sign-in changes (an account made or linked, group memberships, and so
    // authorization) commits with its audit events, never without them.
    let tx = crate::audit::begin_change(&svc.db).await?;
    let link = user_identities::Entity::find_by_id((provider.id.clone(), identity.subject.clone()))
        .one(&tx)
        .await?;
    let (user, created, linked) = match link {
        Some(l) => {
            let u = users::Entity::find_by_id(l.user_id.clone())
                .one(&tx)
                .await?
                .ok_or_else(|| DomainError::Internal("a linked user is missing".into()))?;
            (u, false, false)
        }
        None => match user_store::find_by_email(&tx, &email).await? {
            // Linking by email hands over an existing account: only for an email the provider
            // says it verified.
            Some(_) if provider.link_existing_users && identity.email_verified != Some(true) => {
                return Err(with_claimed(refuse(
                    SsoFailure::LinkRefused,
                    "a Warden user with this email exists, and the provider does not say the email is verified",
                )))
            }
            Some(u) if provider.link_existing_users => {
                if let Some(why) = link_refusal(svc, &tx, &provider, &u).await? {
                    return Err(with_claimed(refuse(SsoFailure::LinkRefused, why)));
                }
                (u, false, true)
            }
            Some(_) => return Err(with_claimed(refuse(
                SsoFailure::LinkRefused,
                "a Warden user with this email exists and linking is not allowed for this provider",
            ))),
            // A new account is made for an email only when the provider says it verified it:
            // else anyone who may set their own email there gets in, or claims the email of
            // someone not yet on board (and the bindings made for them later).
            None if provider.auto_provision && identity.email_verified != Some(true) => {
                return Err(with_claimed(refuse(
                    SsoFailure::EmailUnverified,
                    "the provider does not say the email is verified, and only a verified email admits a new account",
                )))
            }
            None if provider.auto_provision => {
                let name = identity
                    .name
                    .as_deref()
                    .and_then(|n| DisplayName::parse(n).ok())
                    .or_else(|| {
                        DisplayName::parse(email.as_str().split('@').next().unwrap_or("")).ok()
                    })
                    .ok_or_else(|| DomainError::Internal("no usable display name".into()))?;
                let u = provision(&tx, email.clone(), name, now).await?;
                (u, true, false)
            }
            None => {
                return Err(with_claimed(refuse(
                    SsoFailure::NoAccount,
                    "no Warden user with this email, and auto-provisioning is off",
                )))
            }
        },
    };
    // Deactivating a user in Warden wins over the provider.
    if user.status != user_store::STATUS_ACTIVE {
        return Err(with_claimed(refuse(
            SsoFailure::Deactivated,
            "the Warden user is deactivated",
        )));
    }
    // An existing account linked on this sign-in that has its own second factor: the link, and
    // the provider's groups, wait for that code (else a wrong code would leave the link, and
    // the next sign-in through the provider would need no code of the account's at all).
    let uid = user_store::user_id(&user)?;
    let link_due = linked && crate::identity::mfa::is_enabled(&tx, uid).await?;
    let mut handed_over = json!(null);
    let user = if linked && !link_due {
        let (u, ended) = hand_over(svc, &tx, &user, meta).await?;
        handed_over = ended;
        u
    } else {
        user
    };
    if created || (linked && !link_due) {
        link_subject(&tx, &provider.id, &identity.subject, &user.id, now).await?;
    } else if !linked {
        user_identities::Entity::update_many()
            .col_expr(
                user_identities::Column::LastLoginAt,
                sea_orm::sea_query::Expr::value(now.millis()),
            )
            .filter(user_identities::Column::ProviderId.eq(provider.id.clone()))
            .filter(user_identities::Column::Subject.eq(identity.subject.clone()))
            .exec(&tx)
            .await?;
    }
    let changes = if wants_groups && !link_due {
        sync_groups(
            &tx,
            &provider,
            &user.id,
            identity.groups.as_deref().unwrap_or(&[]),
            now,
        )
        .await?
    } else {
        GroupChanges::default()
    };
    let mut changed = Vec::new();
    let actor = Actor::User {
        id: uid,
        name: user.email.clone(),
    };
    if created || (linked && !link_due) {
        changed.push(
            AuditEvent::new(
                AuditKind::SignIn,
                actor.clone(),
                SessionType::Browser,
                "sign_in.account",
                Outcome::Allowed,
            )
            .resource("user", user.email.clone())
            .request(meta.clone())
            .details(json!({
                "provider": provider.name,
                "user_created": created,
                "account_linked": linked,
                "ended": handed_over,
            })),
        );
    }
    if !changes.added.is_empty() || !changes.removed.is_empty() || !changes.kept.is_empty() {
        changed.push(
            AuditEvent::new(
                AuditKind::SignIn,
                actor.clone(),
                SessionType::Browser,
                "sign_in.groups",
                Outcome::Allowed,
            )
            .resource("user", user.email.clone())
            .request(meta.clone())
            .details(json!({
                "provider": provider.name,
                "groups_added": changes.added,
                "groups_removed": changes.removed,
                "groups_kept": changes.kept,
            })),
        );
    }
    crate::audit::append(&tx, now, changed).await?;
    tx.commit().await?;
    if created || !changes.added.is_empty() || !changes.removed.is_empty() {
        svc.policy.bump();
    }

    // The provider's sign-in counts as a second factor only when the provider is trusted for
    // it and its `amr` claim names one; otherwise an enrolled user gives Warden's own code.
    let amr: Vec<String> = claims
        .auth_method_refs()
        .map(|v| v.iter().map(|a| a.to_string()).collect())
        .unwrap_or_default();
    // Never on the sign-in that links an existing account: that account's own second factor
    // is asked for first.
    let provider_mfa = !linked && provider.trust_provider_mfa && amr_has_second_factor(&amr);
    let mfa_due =
        link_due || (!provider_mfa && crate::identity::mfa::is_enabled(&svc.db, uid).await?);
    let mut details = json!({
        "provider": provider.name,
        "method": "oidc",
        "user_created": created,
        "account_linked": linked && !link_due,
        "groups_added": changes.added,
        "groups_removed": changes.removed,
        "groups_kept": changes.kept,
        "amr": amr,
        "provider_mfa": provider_mfa,
    });
    let (user, first) = if mfa_due {
        let pending = crate::identity::mfa::MfaPending {
            user_id: uid,
            generation: user.session_generation,
            started_at: now,
            provider: Some(provider.id.clone()),
            link: link_due.then(|| crate::identity::mfa::PendingLink {
                provider_id: provider.id.clone(),
                subject: identity.subject.clone(),
                groups: wants_groups.then(|| identity.groups.clone().unwrap_or_default()),
            }),
        };
        session
            .insert(crate::identity::mfa::PENDING_KEY, &pending)
            .await
            .map_err(|e| DomainError::Internal(format!("session: {e}")))?;
        details["second_factor_due"] = json!(true);
        if link_due {
            details["link_due"] = json!(true);
        }
        let ev = AuditEvent::new(
            AuditKind::SignIn,
            actor.clone(),
            SessionType::Browser,
            "sign_in.oidc",
            Outcome::Allowed,
        )
        .reason("provider sign-in checked; second factor due");
        (None, ev)
    } else {
        let mfa_at = provider_mfa.then_some(now);
        let user = crate::identity::authn::start_session(
            svc,
            session,
            user,
            now,
            mfa_at,
            Some(provider.id.clone()),
        )
        .await?;
        let ev = AuditEvent::new(
            AuditKind::SignIn,
            actor.clone(),
            SessionType::Browser,
            "sign_in",
            Outcome::Allowed,
        );
        (Some(user), ev)
    };
    let events = vec![first
        .resource("identity_provider", provider.name.clone())
        .request(meta.clone())
        .details(details)];
    svc.audit.record_many(events).await?;
    Ok(match user {
        Some(u) => SsoSignIn::SignedIn(u),
        None => SsoSignIn::MfaRequired,
    })
}

/// The link a provider sign-in left waiting for the account's own second factor, made now
/// that the code was right: checked again (the provider still on, the subject not linked to
/// anyone else, the account still one that may be linked), with the provider's groups.
/// `Ok(Err(why))`: not linked, and the sign-in does not go on.
pub(crate) async fn complete_link(
    svc: &Services,
    user: &users::Model,
    link: &crate::identity::mfa::PendingLink,
    now: Timestamp,
) -> DomainResult<Result<GroupChanges, String>> {
    // An audited change like the others (the link, the groups, what a hand-over ends): the
    // chain's lock first, so on SQLite the transaction is the writer from its first read, and
    // it is taken in turn with every other change.
    let tx = crate::audit::begin_change(&svc.db).await?;
    let Some(provider) = identity_providers::Entity::find_by_id(link.provider_id.clone())
        .filter(identity_providers::Column::Enabled.eq(true))
        .one(&tx)
        .await?
        .map(|m| Provider::from_model(&m))
    else {
        return Ok(Err("the identity provider was turned off or deleted".into()));
    };
    let existing = user_identities::Entity::find_by_id((provider.id.clone(), link.subject.clone()))
        .one(&tx)
        .await?;
    match existing {
        Some(l) if l.user_id != user.id => {
            return Ok(Err(
                "the provider's account was linked to another Warden user meanwhile".into(),
            ))
        }
        Some(_) => {}
        None => {
            if let Some(why) = link_refusal(svc, &tx, &provider, user).await? {
                return Ok(Err(why));
            }
            link_subject(&tx, &provider.id, &link.subject, &user.id, now).await?;
        }
    }
    let changes = match &link.groups {
        Some(g) if !provider.groups_claim.is_empty() => {
            sync_groups(&tx, &provider, &user.id, g, now).await?
        }
        _ => GroupChanges::default(),
    };
    tx.commit().await?;
    if !changes.added.is_empty() || !changes.removed.is_empty() {
        svc.policy.bump();
    }
    Ok(Ok(changes))
}

/// Linking an existing account by its email, with no second factor of its own to prove the
/// person at the provider is the one who used it, hands the account to the provider: whoever
/// else could sign in to it keeps nothing. Someone who made the account before its owner came
/// (a user manager, with a password they chose and a key they minted) would otherwise hold
/// every right later given to that person. In `tx`: the local password is removed (the
/// provider vouches from now on), every session ends, and every API key and kubeconfig is
/// revoked (each audited). Returns the account as it is now and what ended, for the
/// `sign_in.account` event.
async fn hand_over<C: ConnectionTrait>(
    svc: &Services,
    tx: &C,
    user: &users::Model,
    meta: &RequestMeta,
) -> DomainResult<(users::Model, serde_json::Value)> {
    let uid = user_store::user_id(user)?;
    let had_password = user.password_hash.is_some();
    let mut user = user.clone();
    if had_password || user.must_change_password {
        let mut a = user.clone().into_active_model();
        a.password_hash = Set(None);
        a.must_change_password = Set(false);
        user = a.update(tx).await?;
    }
    // A set-password link made with the account (by its maker, or a reset) would give back
    // the local password just removed.
    let links =
        crate::identity::accounts::end_set_password_links(tx, &user.id, svc.clock.now()).await?;
    crate::identity::sessions::delete_user_sessions(tx, uid).await?;
    // The new session is made from this row: with the session generation that just moved on.
    let user = users::Entity::find_by_id(user.id.clone())
        .one(tx)
        .await?
        .ok_or_else(|| DomainError::Internal("the linked user is missing".into()))?;
    let me = Principal::acting_internally(&user, SessionType::Browser, meta.clone())?;
    crate::identity::users::revoke_credentials_in(svc, tx, &me, &user).await?;
    let ended = json!({"local_password": had_password, "set_password_links": links, "sessions": true, "api_keys": true, "kubeconfigs": true});
    Ok((user, ended))
}

/// Link the provider's `subject` to the Warden user, signed in through it now.
async fn link_subject<C: ConnectionTrait>(
    db: &C,
    provider_id: &str,
    subject: &str,
    user_id: &str,
    now: Timestamp,
) -> DomainResult<()> {
    user_identities::ActiveModel::from(user_identities::Model {
        provider_id: provider_id.to_owned(),
        subject: subject.to_owned(),
        user_id: user_id.to_owned(),
        created_at: now.millis(),
        last_login_at: Some(now.millis()),
    })
    .insert(db)
    .await?;
    Ok(())
}

/// A new SSO user: no local password, a member of All Users.
/// Why an existing account may not be handed to a provider's sign-in by its email, if it
/// may not. An email match is all the provider proves: so an account already linked to
/// another provider, a break-glass account, and an account with organization-wide rights are
/// never linked this way (whoever administers that provider's users would then hold them).
async fn link_refusal<C: ConnectionTrait>(
    svc: &Services,
    db: &C,
    provider: &Provider,
    user: &users::Model,
) -> DomainResult<Option<String>> {
    use sea_orm::PaginatorTrait;
    let elsewhere = user_identities::Entity::find()
        .filter(user_identities::Column::UserId.eq(user.id.clone()))
        .filter(user_identities::Column::ProviderId.ne(provider.id.clone()))
        .count(db)
        .await?;
    if elsewhere > 0 {
        return Ok(Some(
            "the Warden user with this email is linked to another identity provider".into(),
        ));
    }
    let org = crate::settings::load(&svc.db).await?;
    if org
        .break_glass_users
        .iter()
        .any(|e| e.eq_ignore_ascii_case(&user.email))
    {
        return Ok(Some(
            "the Warden user with this email is a break-glass account, never linked to a provider"
                .into(),
        ));
    }
    let eff = svc.policy.effective(user_store::user_id(user)?).await?;
    if !eff.org_permissions().is_empty() {
        return Ok(Some(
            "the Warden user with this email holds organization-wide rights, and such an account is not linked by its email"
                .into(),
        ));
    }
    Ok(None)
}

async fn provision<C: ConnectionTrait>(
    db: &C,
    email: Email,
    name: DisplayName,
    now: Timestamp,
) -> DomainResult<users::Model> {
    let u = user_store::create(
        db,
        user_store::NewUser {
            email,
            name,
            password_hash: None,
            must_change_password: false,
            password_set_by: None,
        },
        now,
    )
    .await?;
    let mut a = u.into_active_model();
    a.origin = Set(ORIGIN_SSO.to_owned());
    let u = a.update(db).await?;
    if let Some(g) = groups::Entity::find()
        .filter(groups::Column::Name.eq(ALL_USERS_GROUP))
        .one(db)
        .await?
    {
        group_members::ActiveModel::from(group_members::Model {
            group_id: g.id,
            user_id: u.id.clone(),
            created_at: now.millis(),
        })
        .insert(db)
        .await?;
    }
    Ok(u)
}

/// The Warden groups a provider manages (whose membership it replaces), and the ones its
/// groups map to. By name, `guarded` groups (see [`guarded_groups`]) are left alone: a group
/// of the same name at the provider is not the provider's administrator vouching for them.
fn mapped_groups(
    provider: &Provider,
    all: &[groups::Model],
    provider_groups: &[String],
    guarded: &BTreeSet<String>,
) -> (BTreeMap<String, String>, BTreeSet<String>) {
    let by_lower: HashMap<String, &groups::Model> =
        all.iter().map(|g| (g.name.to_lowercase(), g)).collect();
    let mut managed = BTreeMap::new();
    let mut wanted = BTreeSet::new();
    match &provider.mapping {
        GroupMapping::ByName => {
            let mappable = |g: &groups::Model| !g.builtin && !guarded.contains(&g.id);
            for g in all.iter().filter(|g| mappable(g)) {
                managed.insert(g.id.clone(), g.name.clone());
            }
            for pg in provider_groups {
                if let Some(g) = by_lower.get(&pg.to_lowercase()).filter(|g| mappable(g)) {
                    wanted.insert(g.id.clone());
                }
            }
        }
        GroupMapping::Explicit(table) => {
            for target in table.values() {
                if let Some(g) = by_lower
                    .get(&target.to_lowercase())
                    .filter(|g| g.name != ALL_USERS_GROUP)
                {
                    managed.insert(g.id.clone(), g.name.clone());
                }
            }
            for pg in provider_groups {
                if let Some(g) = table
                    .get(pg)
                    .and_then(|t| by_lower.get(&t.to_lowercase()))
                    .filter(|g| g.name != ALL_USERS_GROUP)
                {
                    wanted.insert(g.id.clone());
                }
            }
        }
    }
    (managed, wanted)
}

/// Groups that mapping by name never touches: those holding an organization-wide grant, a
/// role that changes things anywhere (any `*.write` permission or full kubectl access: a
/// project's administrators, a cluster's admins, a namespace's writers), and those approving a
/// project's access requests. Where members may create or name groups at the provider (GitLab
/// groups, Entra ID security groups, GitHub teams through Dex), a group named like one of them
/// would otherwise hand out the organization, write access to production or a project's
/// approvals. Groups that only read stay mapped by name. An explicit table may still name
/// them: changing a provider takes holding everything.
async fn guarded_groups<C: ConnectionTrait>(
    db: &C,
    now: Timestamp,
) -> DomainResult<BTreeSet<String>> {
    use crate::entities::{bindings, projects, roles};
    let writes: BTreeSet<String> = roles::Entity::find()
        .all(db)
        .await?
        .into_iter()
        .filter(crate::admin::access_requests::is_write_role)
        .map(|r| r.id)
        .collect();
    let mut out: BTreeSet<String> = bindings::Entity::find()
        .filter(bindings::Column::GroupId.is_not_null())
        .filter(crate::admin::bindings::live(now))
        .all(db)
        .await?
        .into_iter()
        .filter(|b| b.project_id.is_none() || writes.contains(&b.role_id))
        .filter_map(|b| b.group_id)
        .collect();
    out.extend(
        projects::Entity::find()
            .filter(projects::Column::ApproverGroupId.is_not_null())
            .all(db)
            .await?
            .into_iter()
            .filter_map(|p| p.approver_group_id),
    );
    Ok(out)
}

/// Replace the user's membership in the provider's mapped groups by what the provider says.
async fn sync_groups<C: ConnectionTrait>(
    db: &C,
    provider: &Provider,
    user_id: &str,
    provider_groups: &[String],
    now: Timestamp,
) -> DomainResult<GroupChanges> {
    let all = groups::Entity::find().all(db).await?;
    let guarded = match provider.mapping {
        GroupMapping::ByName => guarded_groups(db, now).await?,
        GroupMapping::Explicit(_) => BTreeSet::new(),
    };
    let (managed, wanted) = mapped_groups(provider, &all, provider_groups, &guarded);
    // group id -> when the user joined it
    let joined: BTreeMap<String, i64> = group_members::Entity::find()
        .filter(group_members::Column::UserId.eq(user_id))
        .all(db)
        .await?
        .into_iter()
        .filter(|m| managed.contains_key(&m.group_id))
        .map(|m| (m.group_id, m.created_at))
        .collect();
    let current: BTreeSet<String> = joined.keys().cloned().collect();
    let mut changes = GroupChanges::default();
    for g in wanted.difference(&current) {
        group_members::ActiveModel::from(group_members::Model {
            group_id: g.clone(),
            user_id: user_id.to_owned(),
            created_at: now.millis(),
        })
        .insert(db)
        .await?;
        changes.added.push(managed[g].clone());
    }
    let leaving: Vec<&String> = current.difference(&wanted).collect();
    // The provider's groups do not leave the organization without an administrator: an
    // explicit mapping can name a group that carries administration, and the last
    // administrator signing in without the provider's group would lose it with no one left to
    // give it back. Their memberships stay (the event says so); someone else is made an
    // administrator first, and the next sign-in applies the provider's word.
    let was_admin = !leaving.is_empty()
        && crate::admin::bindings::administers_in(
            db,
            crate::ids::UserId::parse(user_id)
                .ok_or_else(|| DomainError::Internal(format!("corrupt user id {user_id:?}")))?,
            now,
        )
        .await?;
    for g in &leaving {
        group_members::Entity::delete_by_id(((*g).clone(), user_id.to_owned()))
            .exec(db)
            .await?;
    }
    if was_admin && !crate::admin::bindings::has_administrator(db, now).await? {
        for g in &leaving {
            group_members::ActiveModel::from(group_members::Model {
                group_id: (*g).clone(),
                user_id: user_id.to_owned(),
                created_at: joined[*g],
            })
            .insert(db)
            .await?;
            changes.kept.push(managed[*g].clone());
        }
    } else {
        changes.removed = leaving.iter().map(|g| managed[*g].clone()).collect();
    }
    changes.added.sort();
    changes.removed.sort();
    changes.kept.sort();
    Ok(changes)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn group(name: &str, builtin: bool) -> groups::Model {
        groups::Model {
            id: format!("id-{name}"),
            name: name.to_owned(),
            description: String::new(),
            builtin,
            created_at: 0,
            updated_at: 0,
        }
    }

    fn provider(mapping: GroupMapping) -> Provider {
        Provider::from_model(&identity_providers::Model {
            id: "p".into(),
            name: "p".into(),
            display_name: "P".into(),
            issuer: "https://idp.example".into(),
            client_id: "c".into(),
            client_secret: "s".into(),
            scopes: "openid email".into(),
            email_claim: "email".into(),
            name_claim: "name".into(),
            groups_claim: "groups".into(),
            allowed_domains: "[]".into(),
            group_mapping_mode: match &mapping {
                GroupMapping::ByName => GroupMappingMode::ByName.as_str().into(),
                GroupMapping::Explicit(_) => GroupMappingMode::Explicit.as_str().into(),
            },
            group_mapping: match &mapping {
                GroupMapping::ByName => "{}".into(),
                GroupMapping::Explicit(t) => serde_json::to_string(t).unwrap(),
            },
            auto_provision: true,
            link_existing_users: false,
            enabled: true,
            trust_provider_mfa: false,
            created_at: 0,
            updated_at: 0,
        })
    }

    #[test]
    fn amr_second_factors() {
        assert!(amr_has_second_factor(&["pwd", "otp"]));
        assert!(amr_has_second_factor(&["MFA"]));
        assert!(amr_has_second_factor(&["hwk", "user"]));
        assert!(amr_has_second_factor(&["pin", "sc"]));
        // One factor: a passwordless sign-in with a code or a bare key.
        assert!(!amr_has_second_factor(&["hwk"]));
        assert!(!amr_has_second_factor(&["otp"]));
        assert!(!amr_has_second_factor(&["sms"]));
        assert!(!amr_has_second_factor(&["otp", "sms"]));
        assert!(!amr_has_second_factor(&["pwd"]));
        assert!(!amr_has_second_factor(&["pwd", "fpt"]));
        assert!(!amr_has_second_factor::<&str>(&[]));
    }

    #[test]
    fn by_name_manages_every_custom_group_and_never_a_builtin() {
        let all = [
            group("Organization Admins", true),
            group(ALL_USERS_GROUP, true),
            group("developers", false),
            group("ops", false),
        ];
        let (managed, wanted) = mapped_groups(
            &provider(GroupMapping::ByName),
            &all,
            &[
                "Developers".into(),
                "Organization Admins".into(),
                "unknown".into(),
            ],
            &BTreeSet::new(),
        );
        assert_eq!(
            managed.values().cloned().collect::<Vec<_>>(),
            ["developers", "ops"]
        );
        assert_eq!(wanted.into_iter().collect::<Vec<_>>(), ["id-developers"]);
        // A guarded group (an organization-wide grant, a project's approvers) is neither
        // joined nor left by name.
        let (managed, wanted) = mapped_groups(
            &provider(GroupMapping::ByName),
            &all,
            &["OPS".into(), "developers".into()],
            &BTreeSet::from(["id-ops".to_owned()]),
        );
        assert_eq!(
            managed.values().cloned().collect::<Vec<_>>(),
            ["developers"]
        );
        assert_eq!(wanted.into_iter().collect::<Vec<_>>(), ["id-developers"]);
    }

    #[test]
    fn explicit_manages_only_the_table_targets() {
        let all = [
            group("Organization Admins", true),
            group("developers", false),
            group("ops", false),
        ];
        let table = BTreeMap::from([
            ("idp-admins".to_owned(), "Organization Admins".to_owned()),
            ("idp-devs".to_owned(), "developers".to_owned()),
        ]);
        let (managed, wanted) = mapped_groups(
            &provider(GroupMapping::Explicit(table)),
            &all,
            &["idp-admins".into(), "ops".into()],
            &BTreeSet::new(),
        );
        assert_eq!(managed.len(), 2);
        assert!(!managed.contains_key("id-ops"));
        assert_eq!(
            wanted.into_iter().collect::<Vec<_>>(),
            ["id-Organization Admins"]
        );
    }
}
