//! The JWT key `twofold keys generate` writes is one other tools read: PKCS#8 v1, as
//! `openssl pkey` and Python's `cryptography` expect, and `twofold` starts with it.

use std::process::Command;

use twofold_tests::scratch;

#[test]
fn keys_generate_writes_a_pkcs8_v1_key_that_openssl_and_python_read() {
    let dir = scratch::dir_path("keys");
    std::fs::create_dir_all(&dir).unwrap();
    let key = dir.join("jwt.pem");
    let generated = Command::new(env!("CARGO_BIN_EXE_twofold"))
        .args(["keys", "generate", "--jwt-key-out"])
        .arg(&key)
        .env_clear()
        .output()
        .unwrap();
    assert!(generated.status.success(), "{generated:?}");

    let openssl = Command::new("openssl")
        .args(["pkey", "-noout", "-text", "-in"])
        .arg(&key)
        .output()
        .unwrap();
    let python = Command::new("python3")
        .arg("-c")
        .arg(
            "import sys\n\
             from cryptography.hazmat.primitives.serialization import load_pem_private_key\n\
             key = load_pem_private_key(open(sys.argv[1], 'rb').read(), password=None)\n\
             print(type(key).__name__)",
        )
        .arg(&key)
        .output()
        .unwrap();
    let asn1 = Command::new("openssl")
        .args(["asn1parse", "-in"])
        .arg(&key)
        .output()
        .unwrap();
    let _ = std::fs::remove_dir_all(&dir);

    assert!(
        openssl.status.success(),
        "openssl pkey: {}",
        String::from_utf8_lossy(&openssl.stderr)
    );
    assert!(String::from_utf8_lossy(&openssl.stdout).contains("ED25519 Private-Key"));
    assert!(
        python.status.success(),
        "cryptography: {}",
        String::from_utf8_lossy(&python.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&python.stdout).trim(),
        "Ed25519PrivateKey"
    );
    // Version 0 (v1) and no public key field: `INTEGER :00` is the first primitive.
    let structure = String::from_utf8_lossy(&asn1.stdout);
    assert!(structure.contains("INTEGER           :00"), "{structure}");
    assert!(
        !structure.contains("cont [ 1 ]"),
        "a v2 public key: {structure}"
    );
}

/// `twofold keys mail-key` prints what the mailer runs with: the mail keys of the sealing key
/// and of the retired ones, never the sealing keys; the mailer refuses the sealing key.
#[test]
fn keys_mail_key_prints_the_mailer_keys_and_the_mailer_refuses_the_sealing_key() {
    use twofold_api::adapters::SealingKey;
    let current = SealingKey::generate();
    let retired = SealingKey::generate();
    let printed = Command::new(env!("CARGO_BIN_EXE_twofold"))
        .args(["keys", "mail-key"])
        .env_clear()
        .env("TWOFOLD_SEALING_KEY", current.to_base64())
        .env("TWOFOLD_SEALING_RETIRED_KEYS", retired.to_base64())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&printed.stdout);
    assert!(printed.status.success(), "{printed:?}");
    assert_eq!(
        stdout.lines().collect::<Vec<_>>(),
        [
            format!(
                "export TWOFOLD_MAIL_KEY={}",
                current.mail_key().to_base64().as_str()
            ),
            format!(
                "export TWOFOLD_MAIL_RETIRED_KEYS={}",
                retired.mail_key().to_base64().as_str()
            ),
        ]
    );
    assert!(!stdout.contains(current.to_base64().as_str()), "{stdout}");

    let without = Command::new(env!("CARGO_BIN_EXE_twofold"))
        .args(["keys", "mail-key"])
        .env_clear()
        .output()
        .unwrap();
    assert!(!without.status.success());
    assert!(String::from_utf8_lossy(&without.stderr).contains("needs TWOFOLD_SEALING_KEY"));

    let mailer = Command::new(env!("CARGO_BIN_EXE_twofold"))
        .arg("mailer")
        .env_clear()
        .env("NATS_URL", "nats://127.0.0.1:4222")
        .env("TWOFOLD_MAIL_KEY", current.mail_key().to_base64().as_str())
        .env("TWOFOLD_SEALING_KEY", current.to_base64())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&mailer.stderr);
    assert_eq!(mailer.status.code(), Some(78), "{stderr}");
    assert!(stderr.contains("TWOFOLD_SEALING_KEY is set"), "{stderr}");
    assert!(!stderr.contains(current.to_base64().as_str()), "{stderr}");
}
