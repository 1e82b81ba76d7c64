"""Pictures in and out: decoding video files and streams (video, fastdecode), choosing which
frames a clip is made of (sampling, clip), and writing videos, labels and plots (writer,
annotate, plots)."""
