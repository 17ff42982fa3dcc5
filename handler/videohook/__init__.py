"""videohook: archive a music-video provider's callbacks and MP4s into AWS."""
