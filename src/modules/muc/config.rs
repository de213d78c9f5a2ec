//! Room configuration (XEP-0045 §10.2): the `muc#roomconfig` form an owner fills in, what a
//! submission may change, and the JSON kept in storage for persistent rooms.

use minidom::Element;
use serde::{Deserialize, Serialize};

use crate::config::MucConfig;
use crate::xml::forms::{self, FieldType, Malformed};
use crate::xml::ns;

/// Who may send private messages to occupants (`muc#roomconfig_allowpm`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AllowPm {
    Anyone,
    Participants,
    Moderators,
    None,
}

impl AllowPm {
    fn as_str(self) -> &'static str {
        match self {
            AllowPm::Anyone => "anyone",
            AllowPm::Participants => "participants",
            AllowPm::Moderators => "moderators",
            AllowPm::None => "none",
        }
    }

    fn parse(value: &str) -> Option<AllowPm> {
        Some(match value {
            "anyone" => AllowPm::Anyone,
            "participants" => AllowPm::Participants,
            "moderators" => AllowPm::Moderators,
            "none" => AllowPm::None,
            _ => return None,
        })
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct RoomConfig {
    pub name: String,
    pub description: String,
    pub persistent: bool,
    pub public: bool,
    pub moderated: bool,
    pub members_only: bool,
    pub password_protected: bool,
    pub password: String,
    /// True: every occupant sees real JIDs (`whois` = anyone); false: only moderators do.
    pub non_anonymous: bool,
    pub max_users: u32,
    /// Participants (not only moderators) may change the subject.
    pub change_subject: bool,
    /// Any occupant (not only moderators) may invite.
    pub allow_invites: bool,
    pub allow_pm: AllowPm,
    /// Most history messages sent on join (`muc#maxhistoryfetch`).
    pub history_length: u32,
}

impl Default for RoomConfig {
    fn default() -> Self {
        RoomConfig {
            name: String::new(),
            description: String::new(),
            persistent: false,
            public: true,
            moderated: false,
            members_only: false,
            password_protected: false,
            password: String::new(),
            non_anonymous: false,
            max_users: crate::config::MUC_MAX_OCCUPANTS,
            change_subject: false,
            allow_invites: false,
            allow_pm: AllowPm::Anyone,
            history_length: 20,
        }
    }
}

impl RoomConfig {
    /// The configuration of a room just created, within the service's limits.
    pub fn initial(limits: &MucConfig) -> RoomConfig {
        RoomConfig {
            max_users: limits.max_occupants,
            history_length: limits.history_messages,
            ..RoomConfig::default()
        }
    }

    /// A stored configuration, clamped to the current limits (they may have been lowered
    /// since it was saved).
    pub fn from_stored(json: &str, limits: &MucConfig) -> RoomConfig {
        let mut config: RoomConfig =
            serde_json::from_str(json).unwrap_or_else(|_| RoomConfig::initial(limits));
        config.max_users = config.max_users.clamp(1, limits.max_occupants);
        config.history_length = config.history_length.min(limits.history_messages);
        config
    }

    pub fn to_stored(&self) -> String {
        serde_json::to_string(self).unwrap_or_default()
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum FormError {
    #[error("the form is not a muc#roomconfig submission")]
    FormType,
    #[error("value not acceptable for {0}")]
    BadValue(String),
    #[error("a password-protected room needs a password")]
    MissingPassword,
    #[error(transparent)]
    Malformed(#[from] Malformed),
}

const FORM_TYPE: &str = forms::FORM_TYPE;
const NAME: &str = "muc#roomconfig_roomname";
const DESC: &str = "muc#roomconfig_roomdesc";
const PERSISTENT: &str = "muc#roomconfig_persistentroom";
const PUBLIC: &str = "muc#roomconfig_publicroom";
const MODERATED: &str = "muc#roomconfig_moderatedroom";
const MEMBERS_ONLY: &str = "muc#roomconfig_membersonly";
const PASSWORD_PROTECTED: &str = "muc#roomconfig_passwordprotectedroom";
const SECRET: &str = "muc#roomconfig_roomsecret";
const WHOIS: &str = "muc#roomconfig_whois";
const MAX_USERS: &str = "muc#roomconfig_maxusers";
const CHANGE_SUBJECT: &str = "muc#roomconfig_changesubject";
const ALLOW_INVITES: &str = "muc#roomconfig_allowinvites";
const ALLOW_PM: &str = "muc#roomconfig_allowpm";
const HISTORY: &str = "muc#maxhistoryfetch";

/// The `maxusers` choices offered: a few round numbers, none above the service's cap.
fn max_users_options(limits: &MucConfig) -> Vec<String> {
    let mut options: Vec<u32> = [5, 10, 20, 30, 50, 100]
        .into_iter()
        .filter(|n| *n < limits.max_occupants)
        .collect();
    options.push(limits.max_occupants);
    options.iter().map(u32::to_string).collect()
}

/// Applies a submitted form to `base`. Fields the form does not name keep their value;
/// fields this service does not know are ignored, since clients echo back whatever other
/// servers offered them.
pub fn apply_form(
    form: &Element,
    base: &RoomConfig,
    limits: &MucConfig,
) -> Result<RoomConfig, FormError> {
    let form = forms::read(form)?;
    let mut config = base.clone();
    for field in &form.fields {
        // Only `fixed` fields lack a var, and they carry no setting.
        let Some(var) = field.var.as_deref() else {
            continue;
        };
        let found = &field.values;
        let bad = || FormError::BadValue(var.to_owned());
        if var == FORM_TYPE {
            if found.first().map(|v| v.trim()) != Some(ns::MUC_ROOMCONFIG) {
                return Err(FormError::FormType);
            }
            continue;
        }
        let value = found.first().cloned().unwrap_or_default();
        let flag = || forms::parse_bool(&value).ok_or_else(bad);
        match var {
            NAME => config.name = value,
            DESC => config.description = value,
            PERSISTENT => config.persistent = flag()?,
            PUBLIC => config.public = flag()?,
            MODERATED => config.moderated = flag()?,
            MEMBERS_ONLY => config.members_only = flag()?,
            PASSWORD_PROTECTED => config.password_protected = flag()?,
            SECRET => config.password = value,
            WHOIS => {
                config.non_anonymous = match value.trim() {
                    "anyone" => true,
                    "moderators" => false,
                    _ => return Err(bad()),
                }
            }
            MAX_USERS => {
                // Above the cap is refused rather than clamped: the owner asked for something
                // this service will not do, and should know.
                config.max_users = value
                    .trim()
                    .parse::<u32>()
                    .ok()
                    .filter(|n| (1..=limits.max_occupants).contains(n))
                    .ok_or_else(bad)?
            }
            CHANGE_SUBJECT => config.change_subject = flag()?,
            ALLOW_INVITES => config.allow_invites = flag()?,
            ALLOW_PM => config.allow_pm = AllowPm::parse(value.trim()).ok_or_else(bad)?,
            HISTORY => {
                config.history_length = value
                    .trim()
                    .parse::<u32>()
                    .ok()
                    .filter(|n| *n <= limits.history_messages)
                    .ok_or_else(bad)?
            }
            _ => {}
        }
    }
    if config.password_protected && config.password.is_empty() {
        return Err(FormError::MissingPassword);
    }
    if !config.password_protected {
        config.password.clear();
    }
    Ok(config)
}

/// The configuration form with the room's current values (XEP-0045 §10.2, example 163).
pub fn form(config: &RoomConfig, limits: &MucConfig) -> Element {
    use forms::{bool_value, field, with_options};
    let whois = if config.non_anonymous {
        "anyone"
    } else {
        "moderators"
    };
    let fields = vec![
        field(NAME, FieldType::TextSingle, "Room name", &config.name),
        field(
            DESC,
            FieldType::TextSingle,
            "Description",
            &config.description,
        ),
        field(
            PERSISTENT,
            FieldType::Boolean,
            "Keep the room when the last occupant leaves",
            bool_value(config.persistent),
        ),
        field(
            PUBLIC,
            FieldType::Boolean,
            "List the room publicly",
            bool_value(config.public),
        ),
        field(
            MODERATED,
            FieldType::Boolean,
            "Only occupants with voice may speak",
            bool_value(config.moderated),
        ),
        field(
            MEMBERS_ONLY,
            FieldType::Boolean,
            "Only members may join",
            bool_value(config.members_only),
        ),
        field(
            PASSWORD_PROTECTED,
            FieldType::Boolean,
            "A password is needed to join",
            bool_value(config.password_protected),
        ),
        field(SECRET, FieldType::TextPrivate, "Password", &config.password),
        with_options(
            field(WHOIS, FieldType::ListSingle, "Who may see real JIDs", whois),
            &["moderators", "anyone"],
        ),
        with_options(
            field(
                MAX_USERS,
                FieldType::ListSingle,
                "Maximum number of occupants",
                &config.max_users.to_string(),
            ),
            &max_users_options(limits),
        ),
        field(
            CHANGE_SUBJECT,
            FieldType::Boolean,
            "Participants may change the subject",
            bool_value(config.change_subject),
        ),
        field(
            ALLOW_INVITES,
            FieldType::Boolean,
            "Occupants may invite others",
            bool_value(config.allow_invites),
        ),
        with_options(
            field(
                ALLOW_PM,
                FieldType::ListSingle,
                "Who may send private messages",
                config.allow_pm.as_str(),
            ),
            &["anyone", "participants", "moderators", "none"],
        ),
        field(
            HISTORY,
            FieldType::TextSingle,
            "History messages sent on join",
            &config.history_length.to_string(),
        ),
    ];
    forms::form(ns::MUC_ROOMCONFIG, Some("Room configuration"), fields)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn submitted(fields: &str) -> Element {
        format!("<x xmlns='jabber:x:data' type='submit'>{fields}</x>")
            .parse()
            .unwrap()
    }

    fn f(var: &str, value: &str) -> String {
        format!("<field var='{var}'><value>{value}</value></field>")
    }

    #[test]
    fn maxusers_above_the_cap_is_refused_and_the_form_offers_none() {
        let limits = MucConfig {
            max_occupants: 30,
            ..MucConfig::default()
        };
        let base = RoomConfig::initial(&limits);
        let over = submitted(&f(MAX_USERS, "31"));
        assert_eq!(
            apply_form(&over, &base, &limits),
            Err(FormError::BadValue(MAX_USERS.into()))
        );
        let ok = apply_form(&submitted(&f(MAX_USERS, "30")), &base, &limits).unwrap();
        assert_eq!(ok.max_users, 30);
        let offered = max_users_options(&limits);
        assert_eq!(offered, vec!["5", "10", "20", "30"]);
    }

    #[test]
    fn password_protection_needs_a_secret_and_unknown_fields_are_ignored() {
        let limits = MucConfig::default();
        let base = RoomConfig::initial(&limits);
        let form = submitted(&(f(PASSWORD_PROTECTED, "1") + &f("muc#roomconfig_lang", "en")));
        assert_eq!(
            apply_form(&form, &base, &limits),
            Err(FormError::MissingPassword)
        );
        let form = submitted(&(f(PASSWORD_PROTECTED, "true") + &f(SECRET, "pw")));
        let config = apply_form(&form, &base, &limits).unwrap();
        assert!(config.password_protected);
        assert_eq!(config.password, "pw");
        let stored = RoomConfig::from_stored(&config.to_stored(), &limits);
        assert_eq!(stored, config);
    }

    #[test]
    fn wrong_form_type_is_refused() {
        let limits = MucConfig::default();
        let form = submitted(&f(
            FORM_TYPE,
            "http://jabber.org/protocol/pubsub#node_config",
        ));
        assert_eq!(
            apply_form(&form, &RoomConfig::default(), &limits),
            Err(FormError::FormType)
        );
    }

    #[test]
    fn the_form_reads_back_as_the_config() {
        let limits = MucConfig::default();
        let config = RoomConfig {
            name: " Room ".into(),
            description: "d".into(),
            persistent: true,
            password_protected: true,
            password: "pw".into(),
            non_anonymous: true,
            max_users: 10,
            allow_pm: AllowPm::Moderators,
            history_length: 5,
            ..RoomConfig::initial(&limits)
        };
        let form = form(&config, &limits);
        assert_eq!(
            apply_form(&form, &RoomConfig::initial(&limits), &limits),
            Ok(config)
        );
    }

    #[test]
    fn malformed_forms_are_refused_and_empty_values_clear_text() {
        let limits = MucConfig::default();
        let base = RoomConfig {
            name: "old".into(),
            ..RoomConfig::initial(&limits)
        };
        let no_var = submitted("<field><value>x</value></field>");
        assert!(matches!(
            apply_form(&no_var, &base, &limits),
            Err(FormError::Malformed(_))
        ));
        let no_form_type_value = submitted("<field var='FORM_TYPE' type='hidden'/>");
        assert!(matches!(
            apply_form(&no_form_type_value, &base, &limits),
            Err(FormError::Malformed(_))
        ));
        let fixed = submitted("<field type='fixed'><value>note</value></field>");
        assert_eq!(apply_form(&fixed, &base, &limits), Ok(base.clone()));
        let empty = submitted(&format!("<field var='{NAME}'><value/></field>"));
        assert_eq!(apply_form(&empty, &base, &limits).unwrap().name, "");
        let no_value = submitted(&format!("<field var='{PUBLIC}'/>"));
        assert_eq!(
            apply_form(&no_value, &base, &limits),
            Err(FormError::BadValue(PUBLIC.into()))
        );
    }
}
