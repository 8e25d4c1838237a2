use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "identity_providers")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: String,
    pub name: String,
    pub display_name: String,
    pub issuer: String,
    pub client_id: String,
    /// Sealed with the master key when one is set (`warden-sealed:v1:...`).
    pub client_secret: String,
    pub scopes: String,
    pub email_claim: String,
    pub name_claim: String,
    pub groups_claim: String,
    /// JSON array of domains.
    pub allowed_domains: String,
    /// `by_name` or `explicit`.
    pub group_mapping_mode: String,
    /// JSON object: provider group -> Warden group (explicit mode).
    pub group_mapping: String,
    pub auto_provision: bool,
    pub link_existing_users: bool,
    pub enabled: bool,
    /// An `amr` claim naming a second factor counts as Warden's second factor.
    pub trust_provider_mfa: bool,
    pub created_at: i64,
    pub updated_at: i64,
}

/// The foreign keys of the table (`belongs_to`, as the migrations declare them) and the
/// tables whose foreign keys name it (`has_many`).
#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {
    #[sea_orm(has_many = "super::user_identities::Entity")]
    UserIdentities,
}

impl Related<super::user_identities::Entity> for Entity {
    fn to() -> RelationDef {
        Relation::UserIdentities.def()
    }
}

impl ActiveModelBehavior for ActiveModel {}
