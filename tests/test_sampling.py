import pytest

from lrcn.media.sampling import parse_group, sample_indices


@pytest.mark.parametrize("num_frames, num_samples, expected", [
    (20, 20, list(range(20))),
    (40, 20, list(range(1, 40, 2))),
    (100, 4, [12, 37, 62, 87]),
    (164, 20, [4, 12, 20, 28, 36, 45, 53, 61, 69, 77, 86, 94, 102, 110, 118, 127, 135, 143,
               151, 159]),
    (10, 20, [i // 2 for i in range(20)]),               # short clip: each frame twice, in order
    (1, 5, [0, 0, 0, 0, 0]),                               # a single frame is repeated
    (3, 7, [0, 0, 1, 1, 1, 2, 2]),
    (21, 20, [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20]),
])
def test_sample_indices_table(num_frames, num_samples, expected):
    assert sample_indices(num_frames, num_samples) == expected


@pytest.mark.parametrize("num_frames", [1, 2, 19, 20, 21, 57, 150, 301, 10_000])
def test_sample_indices_cover_the_clip_in_order(num_frames):
    indices = sample_indices(num_frames, 20)
    assert len(indices) == 20
    assert indices == sorted(indices)
    assert 0 <= indices[0] and indices[-1] <= num_frames - 1
    # evenly spread: the first and last samples sit within one segment of the clip's ends
    assert indices[0] <= num_frames / 20 and indices[-1] >= num_frames - 1 - num_frames / 20


@pytest.mark.parametrize("bad, message", [((0, 20), "at least one frame"),
                                          ((10, 0), "num_samples must be positive"),
                                          ((-1, 5), "at least one frame")])
def test_sample_indices_rejects_nonsense(bad, message):
    with pytest.raises(ValueError, match=message):
        sample_indices(*bad)


@pytest.mark.parametrize("name, group", [
    ("v_TaiChi_g08_c03.avi", "g08"),
    ("v_WalkingWithDog_g1_c2.avi", "g01"),
    ("V_HORSERACE_G21_C04.AVI", "g21"),
    ("v_Swing_g25_c07.mp4", "g25"),
    ("my_phone_video.mp4", None),
    ("v_Swing_c07.avi", None),
])
def test_parse_group(name, group):
    assert parse_group(name) == group
