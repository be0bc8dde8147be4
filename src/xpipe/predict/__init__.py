"""Classification: the scoring core every command shares (`scoring`), the batch run
(`batch`), new detections with a frozen model (`new`, `classify_new`), voting an external
table (`votes`) and the published export layout (`export`)."""
