"""The seven basic emotions of the static datasets the paper trains on (§5.2).

Convention: expression class ``k`` of every dataset fitface builds is ``EMOTIONS[k]``;
``-1`` means "no expression label".
"""

EMOTIONS = ("neutral", "anger", "disgust", "fear", "happiness", "sadness", "surprise")
NEUTRAL = 0
