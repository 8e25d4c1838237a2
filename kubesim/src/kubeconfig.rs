//! Kubeconfig documents for the simulator.

use base64::engine::general_purpose::STANDARD;
use base64::Engine;

/// How a kubeconfig user authenticates.
pub enum Credential<'a> {
    Cert { cert_pem: &'a str, key_pem: &'a str },
    Token(&'a str),
}

/// A kubeconfig with one cluster, one user and one context (`kubesim`).
pub fn render(
    server: &str,
    ca_pem: &str,
    user: &str,
    cred: Credential<'_>,
    namespace: Option<&str>,
) -> String {
    let user_block = match cred {
        Credential::Cert { cert_pem, key_pem } => format!(
            "    client-certificate-data: {}\n    client-key-data: {}\n",
            STANDARD.encode(cert_pem),
            STANDARD.encode(key_pem)
        ),
        Credential::Token(t) => format!("    token: {t}\n"),
    };
    let ns = namespace
        .map(|n| format!("    namespace: {n}\n"))
        .unwrap_or_default();
    format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: kubesim\n  cluster:\n    server: {server}\n    certificate-authority-data: {ca}\ncontexts:\n- name: kubesim\n  context:\n    cluster: kubesim\n    user: {user}\n{ns}current-context: kubesim\npreferences: {{}}\nusers:\n- name: {user}\n  user:\n{user_block}",
        ca = STANDARD.encode(ca_pem),
    )
}
