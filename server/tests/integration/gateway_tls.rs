//! The gateway with an operator-provided certificate (`WARDEN_GATEWAY_TLS_*`, what the Helm
//! chart mounts from a Secret or cert-manager): kubectl asking for the public name gets that
//! certificate and the kubeconfig trusts its CA; loopback clients without a name (the web
//! terminal's kubectl) keep the gateway CA's certificate.

use base64::Engine;
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};
use serde_json::json;
use std::collections::BTreeMap;
use warden_server::gateway::testkit::Kubectl;
use warden_server::gateway::transport::{DirectCredential, DirectEndpoint};
use warden_server::testing::TestApp;

const HOST: &str = "kube.warden.test";

/// An operator's CA and a serving certificate for `host` it signed: (ca pem, cert pem, key pem).
fn operator_pki(host: &str) -> (String, String, String) {
    let ca_key = KeyPair::generate().unwrap();
    let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, "Operator Test CA");
    ca.distinguished_name = dn;
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let ca_cert = ca.clone().self_signed(&ca_key).unwrap();
    let issuer = Issuer::new(ca, ca_key);
    let key = KeyPair::generate().unwrap();
    let leaf = CertificateParams::new(vec![host.to_owned()]).unwrap();
    let cert = leaf.signed_by(&key, &issuer).unwrap();
    (ca_cert.pem(), cert.pem(), key.serialize_pem())
}

/// The kubeconfig pointed at `addr` (the test's gateway port) instead of the public URL,
/// optionally asking for `server_name` (SNI) and trusting `ca` instead of what it embeds.
fn retarget(kubeconfig: &str, addr: &str, server_name: Option<&str>, ca: Option<&str>) -> String {
    let mut v: serde_yaml::Value = serde_yaml::from_str(kubeconfig).unwrap();
    for c in v["clusters"].as_sequence_mut().unwrap() {
        let cluster = &mut c["cluster"];
        let server = cluster["server"].as_str().unwrap().to_owned();
        let path = server.split_once("/clusters/").unwrap().1.to_owned();
        cluster["server"] = format!("https://{addr}/clusters/{path}").into();
        if let Some(n) = server_name {
            cluster["tls-server-name"] = n.into();
        }
        if let Some(ca) = ca {
            cluster["certificate-authority-data"] =
                base64::engine::general_purpose::STANDARD.encode(ca).into();
        }
    }
    serde_yaml::to_string(&v).unwrap()
}

#[tokio::test]
async fn a_provided_certificate_is_served_to_kubectl_and_trusted_by_its_kubeconfig() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let files = tempfile::tempdir().unwrap();
    let (ca_pem, cert_pem, key_pem) = operator_pki(HOST);
    let p = |n: &str| files.path().join(n).display().to_string();
    std::fs::write(p("ca.crt"), &ca_pem).unwrap();
    std::fs::write(p("tls.crt"), &cert_pem).unwrap();
    std::fs::write(p("tls.key"), &key_pem).unwrap();
    let env = BTreeMap::from([
        (
            "WARDEN_GATEWAY_PUBLIC_URL".to_owned(),
            format!("https://{HOST}"),
        ),
        ("WARDEN_GATEWAY_TLS_CERT_FILE".to_owned(), p("tls.crt")),
        ("WARDEN_GATEWAY_TLS_KEY_FILE".to_owned(), p("tls.key")),
        ("WARDEN_GATEWAY_TLS_CA_FILE".to_owned(), p("ca.crt")),
    ]);
    let (app, admin) = TestApp::spawn_with(env).await.with_admin().await;
    admin
        .post("/api/v1/projects", json!({"name": "production"}))
        .await
        .assert_status(201);
    let sim = kubesim::KubeSim::start().await.expect("kubesim");
    app.import_direct_cluster(
        "prod-1",
        "production",
        &[],
        DirectEndpoint {
            url: sim.url().to_owned(),
            ca_pem: sim.ca_pem().to_owned(),
            credential: DirectCredential::Bearer(sim.admin_token().to_owned()),
        },
    )
    .await;

    // The downloaded kubeconfig names the public URL and trusts the operator's CA.
    let kc = admin
        .get("/api/v1/kubeconfig?cluster=prod-1")
        .await
        .assert_status(200)
        .body;
    let v: serde_yaml::Value = serde_yaml::from_str(&kc).unwrap();
    let cluster = &v["clusters"][0]["cluster"];
    assert_eq!(
        cluster["server"].as_str(),
        Some(format!("https://{HOST}/clusters/prod-1").as_str())
    );
    let embedded = base64::engine::general_purpose::STANDARD
        .decode(cluster["certificate-authority-data"].as_str().unwrap())
        .unwrap();
    assert_eq!(String::from_utf8(embedded).unwrap(), ca_pem);

    let addr = app.gateway_url.trim_start_matches("https://").to_owned();
    let dir = tempfile::tempdir().unwrap();
    // kubectl asking for the public name: the provided certificate, verified by the kubeconfig.
    let public = Kubectl::new(
        &dir.path().join("public"),
        &retarget(&kc, &addr, Some(HOST), None),
    );
    let out = public
        .run(&["get", "namespaces", "-o", "name"])
        .await
        .expect_ok();
    assert!(out.stdout.contains("namespace/default"), "{}", out.stdout);

    // The same name, trusting the gateway CA instead: refused, so it really was the provided one.
    let internal_ca = app.gateway().pki().gateway_ca_pem().to_owned();
    let wrong = Kubectl::new(
        &dir.path().join("wrong"),
        &retarget(&kc, &addr, Some(HOST), Some(&internal_ca)),
    );
    wrong.run(&["get", "namespaces"]).await.expect_err("x509");

    // A loopback client naming no host (the web terminal's kubectl) gets the gateway CA's
    // certificate, and the operator's CA does not verify it.
    let loopback = Kubectl::new(
        &dir.path().join("loopback"),
        &retarget(&kc, &addr, None, Some(&internal_ca)),
    );
    loopback
        .run(&["get", "namespaces", "-o", "name"])
        .await
        .expect_ok();
    let loopback_operator_ca = Kubectl::new(
        &dir.path().join("loopback-op"),
        &retarget(&kc, &addr, None, None),
    );
    loopback_operator_ca
        .run(&["get", "namespaces"])
        .await
        .expect_err("x509");
}

#[tokio::test]
async fn a_provided_certificate_that_does_not_load_stops_the_start() {
    use warden_server::config::Config;
    let files = tempfile::tempdir().unwrap();
    let (_, cert_pem, _) = operator_pki(HOST);
    let (_, _, other_key) = operator_pki(HOST);
    let cert = files.path().join("tls.crt");
    let key = files.path().join("tls.key");
    std::fs::write(&cert, cert_pem).unwrap();
    std::fs::write(&key, other_key).unwrap();
    let data = tempfile::tempdir().unwrap();
    let env = BTreeMap::from([
        (
            "WARDEN_GATEWAY_PUBLIC_URL".to_owned(),
            format!("https://{HOST}"),
        ),
        (
            "WARDEN_GATEWAY_TLS_CERT_FILE".to_owned(),
            cert.display().to_string(),
        ),
        (
            "WARDEN_GATEWAY_TLS_KEY_FILE".to_owned(),
            key.display().to_string(),
        ),
        (
            "WARDEN_DATA_DIR".to_owned(),
            data.path().display().to_string(),
        ),
        (
            "WARDEN_DATABASE_URL".to_owned(),
            format!("sqlite://{}/w.db?mode=rwc", data.path().display()),
        ),
    ]);
    let config = Config::from_source(&env).expect("the configuration itself is fine");
    let clock = warden_domain::clock::ManualClock::new();
    let err = warden_server::startup::prepare(config, clock)
        .await
        .err()
        .expect("a key that does not match its certificate must stop the start");
    let msg = format!("{err:#}");
    assert!(msg.contains("does not belong to the certificate"), "{msg}");
}
