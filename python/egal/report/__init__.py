"""What people look at: the selection page (`egal report --scores`) and the experiment page
(`egal report --experiment`, and `egal simulate`'s report.html).

  cam_grid.py        Grad-CAM of fixed test images after every round of an experiment, as small arrays
"""
