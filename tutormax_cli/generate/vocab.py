"""The generator's data tables: date windows, names, subjects, texts and weighted choices."""

from __future__ import annotations

from datetime import UTC, datetime

from .compute import DAY


def _day_number(y: int, m: int, d: int) -> int:
    return (datetime(y, m, d, tzinfo=UTC) - datetime(1970, 1, 1, tzinfo=UTC)).days


ONBOARD_FIRST_DAY = _day_number(2021, 1, 4)  # tutors join between these days
ONBOARD_LAST_DAY = _day_number(2025, 5, 30)
SESSION_FIRST_DAY = _day_number(2024, 1, 1)  # sessions are scheduled between these days
SESSION_LAST_DAY = _day_number(2025, 6, 29)
UPDATED_LAST_US = _day_number(2025, 7, 15) * DAY

# --------------------------------------------------------------------------- uniform picks

# 13 subjects (a prime count: see rng.distinct_picks), with the subject_type of each.
SUBJECTS = (
    ("Math", "STEM"),
    ("Algebra", "STEM"),
    ("Geometry", "STEM"),
    ("Calculus", "STEM"),
    ("Physics", "STEM"),
    ("Chemistry", "STEM"),
    ("Biology", "STEM"),
    ("Computer Science", "STEM"),
    ("English", "Humanities"),
    ("History", "Humanities"),
    ("Spanish", "Languages"),
    ("SAT Prep", "Test Prep"),
    ("ACT Prep", "Test Prep"),
)
# 7 improvement areas (prime, too).
IMPROVEMENT_AREAS = (
    "pacing",
    "clarity of explanations",
    "more practice problems",
    "punctuality",
    "patience",
    "technical setup",
    "homework follow-up",
)
# (display first name, ascii handle for the email)
FIRST_NAMES = (
    ("Ava", "ava"),
    ("Liam", "liam"),
    ("Sofía", "sofia"),
    ("Noah", "noah"),
    ("Priya", "priya"),
    ("Mateo", "mateo"),
    ("Zoë", "zoe"),
    ("Ethan", "ethan"),
    ("Amara", "amara"),
    ("Lucas", "lucas"),
    ("Mei", "mei"),
    ("Oliver", "oliver"),
    ("Fatima", "fatima"),
    ("James", "james"),
    ("Chloé", "chloe"),
    ("Arjun", "arjun"),
    ("Hannah", "hannah"),
    ("Kenji", "kenji"),
    ("Isabella", "isabella"),
    ("Omar", "omar"),
    ("Grace", "grace"),
    ("Diego", "diego"),
    ("Nia", "nia"),
    ("Björn", "bjorn"),
)
LAST_NAMES = (
    ("Smith", "smith"),
    ("García", "garcia"),
    ("Nguyen", "nguyen"),
    ("O'Brien", "obrien"),
    ("Patel", "patel"),
    ("Kim", "kim"),
    ("Johnson", "johnson"),
    ("Müller", "muller"),
    ("Okafor", "okafor"),
    ("Rossi", "rossi"),
    ("Chen", "chen"),
    ("Williams", "williams"),
    ("Haddad", "haddad"),
    ("Brown", "brown"),
    ("Silva", "silva"),
    ("Tanaka", "tanaka"),
    ("Smith-Jones", "smithjones"),
    ("Davis", "davis"),
    ("Kowalski", "kowalski"),
    ("Martin", "martin"),
)
EMAIL_DOMAINS = ("gmail.com", "outlook.com", "tutormax.io", "yahoo.com", "proton.me")
LOCATIONS = (
    "New York, NY",
    "Austin, TX",
    "Chicago, IL",
    "Seattle, WA",
    "Miami, FL",
    "Denver, CO",
    "Boston, MA",
    "Toronto, ON",
    "London, UK",
    "Bengaluru, India",
    "Remote",
)
# Free text by rating band: positive (4–5), neutral (3), negative (1–2); 8 each.
FEEDBACK_TEXT = (
    "Great session, very clear explanations!",
    "My tutor was patient and helped me understand the homework.",
    'Loved the practice problems — "finally" get derivatives.',
    "Super helpful 👍",
    "Explained everything step by step, thank you.",
    "Really engaging; the time flew by.",
    "Best tutor I've had. Would book again.",
    "Helped me prepare for my test, felt confident afterwards.",
    "It was okay.",
    "Good content but we ran a bit over time.",
    "Decent session, some parts were rushed.",
    "Fine, though the audio dropped a few times.",
    "Average. Would like more examples.",
    "Not bad, not great.",
    "Helpful in parts; pace was uneven.",
    "OK session, started a little late.",
    "Tutor was late and seemed unprepared.",
    "Hard to follow, explanations were confusing.",
    "Connection issues the whole time.",
    "Didn't cover what I asked for.",
    "Felt rushed, no time for questions.",
    "Not helpful, I'm still lost.",
    "Tutor kept checking their phone.",
    "Too fast, too many topics at once.",
)
FEEDBACK_BAND_SIZE = 8
BLANK_TEXT = (" ", "   ", "\t")  # not "": an empty CSV cell is null (SPEC §1)

SUBJECT_NAMES = tuple(s for s, _ in SUBJECTS)
SUBJECT_TYPES = tuple(c for _, c in SUBJECTS)
FIRST_NAME_DISPLAY = tuple(f for f, _ in FIRST_NAMES)
FIRST_NAME_HANDLES = tuple(h for _, h in FIRST_NAMES)
LAST_NAME_DISPLAY = tuple(s for s, _ in LAST_NAMES)
LAST_NAME_HANDLES = tuple(h for _, h in LAST_NAMES)

# --------------------------------------------------------------------------- weighted picks
# (value, weight)

STATUS = (("active", 70), ("inactive", 18), ("churned", 12))
EDUCATION = (
    ("High School", 8),
    ("Associate", 10),
    ("Bachelor's", 45),
    ("Master's", 30),
    ("PhD", 7),
)
ARCHETYPES = (
    ("high_performer", 15),
    ("steady", 45),
    ("new_enthusiast", 15),
    ("at_risk", 15),
    ("declining", 10),
)
SESSION_TYPES = (("regular", 70), ("trial", 8), ("makeup", 7), ("group", 10), ("exam_prep", 5))
DURATIONS = (
    (15, 3),
    (30, 20),
    (45, 15),
    (60, 35),
    (90, 12),
    (120, 10),
    (180, 3),
    (240, 1),
    (480, 1),
)
# UTC hour of scheduled starts: busy in the US afternoon/evening, some everywhere else.
HOURS = tuple(
    zip(
        range(24),
        (6, 5, 3, 2, 1, 1, 1, 1, 1, 2, 2, 3, 4, 5, 6, 7, 8, 8, 8, 8, 9, 9, 8, 7),
        strict=True,
    )
)
MINUTES = ((0, 5), (15, 2), (30, 4), (45, 2))
OVERALL = ((1, 4), (2, 6), (3, 15), (4, 35), (5, 40))
CATEGORY_DELTA = ((-1, 2), (0, 5), (1, 2))  # a category rating = overall + delta, in 1..5
