//! The `twofold-mailer` binary holds the mail key only.

use std::process::Stdio;

use twofold_nats::MailKey;

#[tokio::test]
async fn the_mailer_refuses_to_start_next_to_the_api_sealing_key() {
    let sealing_key = [7u8; 32];
    let mail_key = MailKey::derive(&sealing_key).to_base64();
    for root in twofold_mailer::ROOT_KEY_SETTINGS {
        let output = tokio::process::Command::new(env!("CARGO_BIN_EXE_twofold-mailer"))
            .env("NATS_URL", "nats://127.0.0.1:4222")
            .env("TWOFOLD_MAIL_KEY", mail_key.as_str())
            .env(root, "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=")
            .env("RUST_LOG", "error")
            .stdin(Stdio::null())
            .kill_on_drop(true)
            .output()
            .await
            .unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(2), "{stderr}");
        assert!(stderr.contains(&format!("{root} is set")), "{stderr}");
        assert!(stderr.contains("twofold keys mail-key"), "{stderr}");
        assert!(!stderr.contains("AAECAwQF"), "{stderr}");
    }
}
