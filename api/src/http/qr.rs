//! QR codes for authenticator enrolment, rendered as PNG off the async runtime.

use qrcode::QrCode;

use crate::http::error::ApiError;

/// The PNG of a QR code holding `text`. Blocking work; runs on the blocking pool.
pub async fn png(text: String) -> Result<Vec<u8>, ApiError> {
    tokio::task::spawn_blocking(move || render(&text))
        .await
        .map_err(|error| ApiError::Internal(Box::new(error)))?
}

fn render(text: &str) -> Result<Vec<u8>, ApiError> {
    let code = QrCode::new(text.as_bytes()).map_err(|error| ApiError::Internal(Box::new(error)))?;
    let image = code
        .render::<image::Luma<u8>>()
        .min_dimensions(256, 256)
        .build();
    let mut png = Vec::new();
    image::DynamicImage::ImageLuma8(image)
        .write_to(&mut std::io::Cursor::new(&mut png), image::ImageFormat::Png)
        .map_err(|error| ApiError::Internal(Box::new(error)))?;
    Ok(png)
}
