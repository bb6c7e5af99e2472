//! Rendering parameters and their parsers: the DICOMweb query parameters of rendered
//! resources (PS3.18 §8.3.5.1) and the WADO-URI ones (PS3.18 §9.1.2 / §9.2).

/// Largest viewport side accepted, so that the output image (and the memory to make it) stays
/// bounded whatever the request says.
pub const MAX_VIEWPORT: u32 = 4096;

/// Side of the box a thumbnail fits in when the request gives no viewport. PS3.18 leaves the
/// size of a thumbnail to the origin server.
pub const THUMBNAIL_SIZE: u32 = 128;

/// The VOI LUT function a window is applied with (PS3.3 C.11.2.1.2 / C.11.2.1.3).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum VoiFunction {
    #[default]
    Linear,
    LinearExact,
    Sigmoid,
}

impl VoiFunction {
    /// Accepts the PS3.18 spellings (`linear`, `linear-exact`, `sigmoid`) and the attribute's
    /// (`LINEAR`, `LINEAR_EXACT`, `SIGMOID`), in any case.
    pub fn parse(text: &str) -> Option<VoiFunction> {
        match text.trim().to_ascii_lowercase().replace('_', "-").as_str() {
            "linear" => Some(VoiFunction::Linear),
            "linear-exact" => Some(VoiFunction::LinearExact),
            "sigmoid" => Some(VoiFunction::Sigmoid),
            _ => None,
        }
    }
}

/// A VOI window in modality units (after the Modality LUT).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Window {
    pub center: f64,
    pub width: f64,
    pub function: VoiFunction,
}

impl Window {
    /// Checks the width the function needs: at least 1 for LINEAR, more than 0 otherwise
    /// (PS3.3 C.11.2.1.2).
    pub fn validate(&self) -> Result<(), String> {
        if !self.center.is_finite() || !self.width.is_finite() {
            return Err("window center and width must be finite numbers".into());
        }
        match self.function {
            VoiFunction::Linear if self.width < 1.0 => Err(format!(
                "window width {} is below 1 (required for linear)",
                self.width
            )),
            VoiFunction::LinearExact | VoiFunction::Sigmoid if self.width <= 0.0 => {
                Err(format!("window width {} must be greater than 0", self.width))
            }
            _ => Ok(()),
        }
    }
}

/// The encoding of the rendered image.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum ImageFormat {
    #[default]
    Jpeg,
    Png,
}

impl ImageFormat {
    pub fn media_type(self) -> &'static str {
        match self {
            ImageFormat::Jpeg => "image/jpeg",
            ImageFormat::Png => "image/png",
        }
    }

    /// The format a media type names (`image/jpeg`, `image/png`, parameters ignored).
    pub fn from_media_type(media: &str) -> Option<ImageFormat> {
        let bare = media.split(';').next().unwrap_or("").trim().to_ascii_lowercase();
        match bare.as_str() {
            "image/jpeg" | "image/jpg" => Some(ImageFormat::Jpeg),
            "image/png" => Some(ImageFormat::Png),
            _ => None,
        }
    }
}

/// How to render one frame.
#[derive(Clone, Debug, PartialEq)]
pub struct RenderParams {
    /// Explicit VOI window; `None` uses the object's own (then its VOI LUT, then min/max).
    pub window: Option<Window>,
    /// `(columns, rows)` of the box the image is scaled to fit in, aspect ratio kept. A side
    /// of `u32::MAX` leaves that side free (WADO-URI `rows` without `columns`).
    pub viewport: Option<(u32, u32)>,
    /// JPEG quality, 1..=100; ignored for PNG.
    pub quality: u8,
    pub format: ImageFormat,
}

impl Default for RenderParams {
    fn default() -> Self {
        RenderParams {
            window: None,
            viewport: None,
            quality: 90,
            format: ImageFormat::Jpeg,
        }
    }
}

fn number(name: &str, text: &str) -> Result<f64, String> {
    text.trim()
        .parse::<f64>()
        .ok()
        .filter(|v| v.is_finite())
        .ok_or_else(|| format!("{name}: {text:?} is not a number"))
}

fn side(name: &str, text: &str) -> Result<u32, String> {
    match text.trim().parse::<u32>() {
        Ok(v) if (1..=MAX_VIEWPORT).contains(&v) => Ok(v),
        _ => Err(format!(
            "{name}: {text:?} is not an integer from 1 to {MAX_VIEWPORT}"
        )),
    }
}

fn quality(name: &str, text: &str) -> Result<u8, String> {
    match text.trim().parse::<u8>() {
        Ok(v) if (1..=100).contains(&v) => Ok(v),
        _ => Err(format!("{name}: {text:?} is not an integer from 1 to 100")),
    }
}

impl RenderParams {
    /// Parameters of a thumbnail: JPEG fitted in `THUMBNAIL_SIZE`², unless the query says
    /// otherwise.
    pub fn thumbnail() -> RenderParams {
        RenderParams {
            viewport: Some((THUMBNAIL_SIZE, THUMBNAIL_SIZE)),
            ..RenderParams::default()
        }
    }

    /// Applies the PS3.18 §8.3.5.1 query parameters of a rendered resource to `self`:
    /// `window=center,width[,function]`, `viewport=vw,vh[,sx,sy,sw,sh]` (the source region
    /// `sx,sy,sw,sh` is accepted but not applied: the whole frame is rendered), `quality=`.
    /// `annotation`, `charset` and `iccprofile` are accepted and ignored; other names are
    /// left to the caller (`accept`). Errors say which value is wrong.
    pub fn apply_query<'a>(
        mut self,
        pairs: impl IntoIterator<Item = (&'a str, &'a str)>,
    ) -> Result<RenderParams, String> {
        for (name, value) in pairs {
            match name {
                "window" => {
                    let parts: Vec<&str> = value.split(',').collect();
                    if !(2..=3).contains(&parts.len()) {
                        return Err(format!("window: {value:?} is not center,width[,function]"));
                    }
                    let function = match parts.get(2) {
                        Some(f) => VoiFunction::parse(f).ok_or_else(|| {
                            format!("window: function {f:?} is not linear, linear-exact or sigmoid")
                        })?,
                        None => VoiFunction::Linear,
                    };
                    let window = Window {
                        center: number("window center", parts[0])?,
                        width: number("window width", parts[1])?,
                        function,
                    };
                    window.validate().map_err(|e| format!("window: {e}"))?;
                    self.window = Some(window);
                }
                "viewport" => {
                    let parts: Vec<&str> = value.split(',').collect();
                    if ![2, 4, 6].contains(&parts.len()) {
                        return Err(format!("viewport: {value:?} is not vw,vh[,sx,sy[,sw,sh]]"));
                    }
                    for extra in &parts[2..] {
                        if !extra.trim().is_empty() {
                            number("viewport", extra)?;
                        }
                    }
                    self.viewport = Some((
                        side("viewport width", parts[0])?,
                        side("viewport height", parts[1])?,
                    ));
                }
                "quality" => self.quality = quality("quality", value)?,
                _ => {}
            }
        }
        Ok(self)
    }

    /// Applies the WADO-URI parameters (PS3.18 §9.1.2.1 and Table 9.2-1): `windowCenter` and
    /// `windowWidth` (both or neither), `rows`, `columns` (either alone scales to that side),
    /// `imageQuality`. `frameNumber` is the caller's.
    pub fn apply_wado_uri<'a>(
        mut self,
        pairs: impl IntoIterator<Item = (&'a str, &'a str)> + Clone,
    ) -> Result<RenderParams, String> {
        let get = |name: &str| {
            pairs
                .clone()
                .into_iter()
                .find(|(k, _)| *k == name)
                .map(|(_, v)| v)
        };
        match (get("windowCenter"), get("windowWidth")) {
            (Some(c), Some(w)) => {
                let window = Window {
                    center: number("windowCenter", c)?,
                    width: number("windowWidth", w)?,
                    function: VoiFunction::Linear,
                };
                window.validate()?;
                self.window = Some(window);
            }
            (None, None) => {}
            _ => return Err("windowCenter and windowWidth go together".into()),
        }
        let rows = get("rows").map(|r| side("rows", r)).transpose()?;
        let columns = get("columns").map(|c| side("columns", c)).transpose()?;
        if rows.is_some() || columns.is_some() {
            self.viewport = Some((columns.unwrap_or(u32::MAX), rows.unwrap_or(u32::MAX)));
        }
        if let Some(q) = get("imageQuality") {
            self.quality = quality("imageQuality", q)?;
        }
        Ok(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn query(q: &[(&'static str, &'static str)]) -> Result<RenderParams, String> {
        RenderParams::default().apply_query(q.iter().copied())
    }

    #[test]
    fn rendered_query_parameters_parse() {
        let p = query(&[("window", "40,400"), ("viewport", "64,32"), ("quality", "75")]).unwrap();
        assert_eq!(
            p.window,
            Some(Window {
                center: 40.0,
                width: 400.0,
                function: VoiFunction::Linear
            })
        );
        assert_eq!(p.viewport, Some((64, 32)));
        assert_eq!(p.quality, 75);
        let p = query(&[("window", "-600.5,1500,SIGMOID"), ("viewport", "10,20,0,0,5,5")]).unwrap();
        assert_eq!(p.window.unwrap().function, VoiFunction::Sigmoid);
        assert_eq!(p.viewport, Some((10, 20)));
        assert_eq!(
            query(&[("window", "1,2,linear-exact")])
                .unwrap()
                .window
                .unwrap()
                .function,
            VoiFunction::LinearExact
        );
        assert_eq!(
            query(&[("annotation", "patient")]).unwrap(),
            RenderParams::default()
        );
    }

    #[test]
    fn bad_rendered_query_parameters_say_what_is_wrong() {
        for (name, value, needle) in [
            ("window", "40", "center,width"),
            ("window", "a,400", "not a number"),
            ("window", "40,0.5", "below 1"),
            ("window", "40,0,sigmoid", "greater than 0"),
            ("window", "40,400,cubic", "function"),
            ("viewport", "0,10", "viewport width"),
            ("viewport", "10", "vw,vh"),
            ("viewport", "10,99999", "viewport height"),
            ("quality", "0", "quality"),
            ("quality", "101", "quality"),
        ] {
            let e = query(&[(name, value)]).unwrap_err();
            assert!(e.contains(needle), "{name}={value}: {e}");
        }
    }

    #[test]
    fn wado_uri_parameters_parse() {
        let pairs = [
            ("windowCenter", "50"),
            ("windowWidth", "350"),
            ("rows", "64"),
            ("imageQuality", "80"),
        ];
        let p = RenderParams::default()
            .apply_wado_uri(pairs.iter().copied())
            .unwrap();
        assert_eq!(p.window.unwrap().center, 50.0);
        assert_eq!(p.viewport, Some((u32::MAX, 64)));
        assert_eq!(p.quality, 80);
        let lone = [("windowCenter", "50")];
        assert!(RenderParams::default()
            .apply_wado_uri(lone.iter().copied())
            .is_err());
    }
}
