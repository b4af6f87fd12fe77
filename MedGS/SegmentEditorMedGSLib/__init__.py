"""The Segment Editor effect "MedGS fill between slices" (SegmentEditorEffect.py).

Slicer loads the effect from its file path (qSlicerSegmentEditorScriptedEffect.setPythonSource);
the MedGS module registers it at startup. Its logic is MedGSLogicLib.fill_between.
"""
