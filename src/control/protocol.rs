//! What `corvid ctl` and the running server say to each other: one JSON object per line, a
//! request from the command line and the server's one answer. Both sides are this crate, so
//! the format only has to stay readable (for `socat` and scripts), not versioned.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// One request per connection.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "kebab-case")]
pub enum Request {
    /// Is the server there, and what is it serving.
    Status,
    /// The administrative commands the operator may run (the ad-hoc commands admins see).
    Commands,
    /// Runs one ad-hoc command to completion, the fields submitted on its first form.
    Run {
        node: String,
        #[serde(default)]
        fields: BTreeMap<String, Vec<String>>,
    },
    /// `corvid user …` changed an account in storage behind the server's back: the server
    /// acts on it (a deleted account's sessions end).
    AccountChanged { jid: String, change: AccountChange },
    /// The nodes of the cluster this server is a node of; `drain` and `undrain` change this
    /// node first.
    Cluster {
        #[serde(default)]
        action: ClusterAction,
    },
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ClusterAction {
    #[default]
    List,
    /// Stop taking logins and ask resumable sessions to move to another node.
    Drain,
    /// Take logins again.
    Undrain,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum AccountChange {
    Created,
    Deleted,
    PasswordChanged,
    Disabled,
    Enabled,
}

/// The server's answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Response {
    Ok { ok: Outcome },
    Error { error: String },
}

/// What a request produced, in a shape both a person and a script can read.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Outcome {
    /// Notes, in order: (`info` | `warn` | `error`, text).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub notes: Vec<Note>,
    /// Named values, in the order the command gave them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub fields: Vec<Field>,
    /// Rows of a table (XEP-0004 reported/items), each a field name -> values map.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub rows: Vec<BTreeMap<String, Vec<String>>>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Note {
    pub kind: String,
    pub text: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Field {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub label: Option<String>,
    pub values: Vec<String>,
}

impl Outcome {
    pub fn field(&mut self, name: &str, label: &str, values: Vec<String>) {
        self.fields.push(Field {
            name: name.to_owned(),
            label: Some(label.to_owned()),
            values,
        });
    }

    /// The values of field `name`, if the outcome has it.
    pub fn values(&self, name: &str) -> Option<&[String]> {
        self.fields
            .iter()
            .find(|field| field.name == name)
            .map(|field| field.values.as_slice())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_read_as_a_script_would_write_them() {
        let request: Request = serde_json::from_str(
            r#"{"op":"run","node":"http://jabber.org/protocol/admin#announce","fields":{"announcement":["bye"]}}"#,
        )
        .unwrap();
        let Request::Run { node, fields } = request else {
            panic!("not a run request");
        };
        assert!(node.ends_with("#announce"));
        assert_eq!(fields["announcement"], vec!["bye".to_owned()]);
        let status: Request = serde_json::from_str(r#"{"op":"status"}"#).unwrap();
        assert_eq!(status, Request::Status);
        let cluster: Request = serde_json::from_str(r#"{"op":"cluster"}"#).unwrap();
        assert_eq!(
            cluster,
            Request::Cluster {
                action: ClusterAction::List
            }
        );
        let drain: Request = serde_json::from_str(r#"{"op":"cluster","action":"drain"}"#).unwrap();
        assert_eq!(
            drain,
            Request::Cluster {
                action: ClusterAction::Drain
            }
        );
    }

    #[test]
    fn answers_round_trip() {
        let mut outcome = Outcome::default();
        outcome.field("onlineusersnum", "Number of online users", vec!["2".into()]);
        for response in [
            Response::Ok { ok: outcome },
            Response::Error {
                error: "forbidden".into(),
            },
        ] {
            let line = serde_json::to_string(&response).unwrap();
            let back: Response = serde_json::from_str(&line).unwrap();
            assert_eq!(back, response);
        }
    }
}
