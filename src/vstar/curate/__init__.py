"""Curation (DESIGN.md section 7, Panda-70M): scene splitting of long videos and scoring of candidate captions.

```bash
vstar split --videos raw/ --output data/clips
vstar select --captions data/captions --scorer runs/scorer --output data/selected
```
"""
