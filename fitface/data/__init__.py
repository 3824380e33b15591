"""Training datasets (docs/formats.md).

* :mod:`.format`: the dataset folder (writer, loader with validation, memory-mapped vertices).
* :mod:`.plan`: which identity, emotion and intensity each sample gets (static + motion parts,
  ~7% expression-labeled, as the paper's data); :mod:`.emotions`: the seven emotions.
* :mod:`.synthetic` + :mod:`.procedural`: the built-in procedural face set.
* :mod:`.ict`: the realistic set from the ICT-FaceKit light-stage model.
* :mod:`.importer`: a folder of the user's registered meshes + a labels CSV.
"""
