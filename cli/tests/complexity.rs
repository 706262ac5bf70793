// SPDX-License-Identifier: MPL-2.0
//! Content complexity (P.910 SI/TI) measured on the sample clips, and the level the default
//! sizing gives them.

use gopswarm_orchestrator::controller::{Level, Sizing};
use std::time::Duration;

fn measure(name: &str) -> gopswarm_proto::ContentComplexity {
    let path = gopswarm::media_dir().join(format!("{name}.mp4"));
    assert!(
        path.exists(),
        "{} missing: run test-media/fetch.sh",
        path.display()
    );
    gopswarm::complexity::measure(path.to_str().unwrap(), 40, 3, Duration::from_secs(60)).unwrap()
}

#[test]
fn sample_clips_rank_as_their_content_says() {
    let synthetic = measure("synthetic-720p25"); // zone plate, snow, moving bars
    let bikes = measure("bikes"); // fast motion
    let carphone = measure("carphone_pristine"); // talking head in a car
    let bbb = measure("bigbuckbunny");
    for c in [&synthetic, &bikes, &carphone, &bbb] {
        assert!(c.frames >= 30, "{c:?}");
    }
    assert!(synthetic.si > 2.0 * bbb.si, "{synthetic:?} vs {bbb:?}");
    assert!(bikes.ti > 3.0 * carphone.ti, "{bikes:?} vs {carphone:?}");
    let s = Sizing::default();
    assert_eq!(s.level(&synthetic), Level::High);
    assert_eq!(s.level(&bikes), Level::High);
    assert_eq!(s.level(&carphone), Level::Medium);
    assert_eq!(s.level(&bbb), Level::Medium);
}

#[test]
fn unreadable_sources_are_clear_errors() {
    let e = gopswarm::complexity::measure("/nonexistent.mp4", 10, 1, Duration::from_secs(5))
        .unwrap_err();
    assert!(e.to_string().contains("not found"), "{e}");
    let corrupt = gopswarm::media_dir().join("truncated.mp4");
    assert!(
        gopswarm::complexity::measure(corrupt.to_str().unwrap(), 10, 1, Duration::from_secs(10))
            .is_err()
    );
}
