"""The synthetic faces' expressions: the neutral face, per-face jitter, and each class's styles
(hidden sub-classes) as overrides of the neutral face."""

from __future__ import annotations

from ..classes import EMOTIONS

# --------------------------------------------------------------------------------------------
# Geometry is in face units: the face oval spans about x in [-0.62, 0.62], y in [-0.8, 0.8],
# y grows downwards; the image spans [-1, 1] before pose is applied.
# --------------------------------------------------------------------------------------------
EXPR_NEUTRAL: dict[str, float] = {
    "eye_open": 0.55,  # eye height / eye half-width
    "eye_arc": 0.0,  # >0 bends the eye into an upward arc (laughing), <0 downwards
    "pupil_dx": 0.0,  # pupil offset, fraction of the eye half-width (sign randomised)
    "pupil_dy": 0.0,  # >0 looks down
    "brow_raise": 0.0,  # upward shift of the eyebrows
    "brow_tilt": 0.0,  # >0 inner ends down (angry), <0 inner ends up (sad, fear)
    "brow_arch": 0.015,  # middle of the brow higher than its ends
    "mouth_curve": 0.0,  # >0 corners up (smile), <0 corners down (frown)
    "mouth_open": 0.0,  # opening at the centre of the mouth
    "mouth_w": 0.21,  # mouth half-width
    "mouth_asym": 0.0,  # one corner raised (side randomised)
    "teeth": 0.0,  # visibility of a row of teeth inside an open mouth
    "nose_wrinkle": 0.0,  # horizontal wrinkles on the nose bridge (disgust)
    "furrow": 0.0,  # vertical frown lines between the brows (angry)
    "tears": 0.0,  # tear drops under the eyes (crying)
    "tongue": 0.0,  # tongue sticking out of the mouth (disgust)
    "glasses": 0.0,  # a pair of round glasses (not scaled by intensity)
}
EXPR_JITTER: dict[str, float] = {
    "eye_open": 0.1,
    "eye_arc": 0.01,
    "pupil_dx": 0.15,
    "pupil_dy": 0.12,
    "brow_raise": 0.025,
    "brow_tilt": 0.1,
    "brow_arch": 0.01,
    "mouth_curve": 0.02,
    "mouth_open": 0.015,
    "mouth_w": 0.022,
    "mouth_asym": 0.01,
    "teeth": 0.0,
    "nose_wrinkle": 0.0,
    "furrow": 0.0,
    "tears": 0.0,
    "tongue": 0.0,
    "glasses": 0.0,
}
NOT_SCALED = ("glasses",)  # binary accessories: present or not, whatever the intensity

# class -> [(style name, share of the class, overrides of the neutral face)]
STYLE_SPECS: dict[str, list[tuple[str, float, dict[str, float]]]] = {
    "angry": [
        (
            "glare",
            0.40,
            dict(brow_tilt=0.42, brow_raise=-0.045, eye_open=0.38, mouth_curve=-0.025, mouth_w=0.17, furrow=1.0),
        ),
        (
            "shout",
            0.35,
            dict(
                brow_tilt=0.40,
                brow_raise=-0.035,
                eye_open=0.6,
                mouth_open=0.17,
                mouth_w=0.23,
                mouth_curve=-0.045,
                furrow=0.6,
            ),
        ),
        (
            "clenched_teeth",
            0.25,
            dict(
                brow_tilt=0.36,
                brow_raise=-0.03,
                eye_open=0.45,
                mouth_open=0.08,
                teeth=1.0,
                mouth_w=0.26,
                mouth_curve=-0.015,
                furrow=0.8,
            ),
        ),
    ],
    "disgust": [
        (
            "wrinkled_nose",
            0.6,
            dict(
                brow_tilt=0.22,
                brow_raise=-0.05,
                eye_open=0.28,
                nose_wrinkle=1.0,
                mouth_curve=-0.06,
                mouth_w=0.19,
                mouth_open=0.03,
            ),
        ),
        (
            "tongue_out",
            0.4,
            dict(
                brow_tilt=0.16,
                brow_raise=-0.03,
                eye_open=0.32,
                mouth_open=0.07,
                tongue=1.0,
                nose_wrinkle=0.4,
                mouth_curve=-0.03,
                mouth_asym=0.03,
            ),
        ),
    ],
    "fear": [
        (
            "scream",
            0.6,
            dict(brow_raise=0.075, brow_tilt=-0.3, eye_open=1.0, mouth_open=0.13, mouth_w=0.24, mouth_curve=-0.035),
        ),
        (
            "grimace",
            0.4,
            dict(
                brow_raise=0.07,
                brow_tilt=-0.34,
                eye_open=0.95,
                mouth_open=0.035,
                mouth_w=0.27,
                mouth_curve=-0.045,
                teeth=0.7,
            ),
        ),
    ],
    "happy": [
        ("closed_smile", 0.35, dict(mouth_curve=0.085, mouth_w=0.24, eye_open=0.48)),
        ("open_grin", 0.30, dict(mouth_curve=0.09, mouth_open=0.11, teeth=1.0, mouth_w=0.26, eye_open=0.45)),
        (
            "laughing",
            0.20,
            dict(eye_open=0.1, eye_arc=0.055, mouth_open=0.17, mouth_curve=0.07, mouth_w=0.25, brow_raise=0.02),
        ),
        ("smirk", 0.15, dict(mouth_asym=0.085, mouth_curve=0.03, mouth_w=0.2, eye_open=0.45)),
    ],
    "sad": [
        ("frown", 0.45, dict(brow_tilt=-0.34, brow_raise=0.015, eye_open=0.45, mouth_curve=-0.075, mouth_w=0.19)),
        (
            "crying",
            0.30,
            dict(
                brow_tilt=-0.38,
                eye_open=0.12,
                eye_arc=-0.03,
                tears=1.0,
                mouth_open=0.08,
                mouth_curve=-0.08,
                mouth_w=0.21,
            ),
        ),
        ("downcast", 0.25, dict(brow_tilt=-0.16, eye_open=0.3, pupil_dy=0.6, mouth_curve=-0.03, mouth_w=0.17)),
    ],
    "surprise": [
        ("open_o", 0.6, dict(brow_raise=0.1, brow_arch=0.045, eye_open=1.05, mouth_open=0.2, mouth_w=0.11)),
        ("raised_brows", 0.4, dict(brow_raise=0.1, brow_arch=0.045, eye_open=1.0, mouth_open=0.045, mouth_w=0.14)),
    ],
    "neutral": [
        ("relaxed", 0.45, dict()),
        ("glasses", 0.30, dict(glasses=1.0)),
        ("sleepy", 0.25, dict(eye_open=0.26, mouth_curve=-0.012, brow_raise=-0.01)),
    ],
}
assert tuple(STYLE_SPECS) == tuple(sorted(STYLE_SPECS, key=EMOTIONS.index))

SYNTHETIC_STYLES: dict[str, list[str]] = {c: [s[0] for s in specs] for c, specs in STYLE_SPECS.items()}
"""Style (hidden sub-class) names per class, in canonical class order; ``extras["style"]``
indexes into these lists."""

EXPR_NAMES = tuple(EXPR_NEUTRAL)
INTENSITY = (0.4, 1.15)
