"""test_profile_log.py: SDW_PROFILE=1 in the service's environment reaches the workers: each finished job
logs the engine's profile table as job_profile lines (per model, per UNet level, per op kind); without it,
none."""
import sdw
from sdw import Service, expect


def profile_rows(svc):
    return [line for line in svc.log_text().splitlines() if "event=job_profile" in line]


def test_profile_logged():
    if sdw.FAKE:
        sdw.skip("the fake worker has no engine")
    with Service("profile", env={"SDW_PROFILE": "1"}) as svc:
        svc.wait_ready()
        job = svc.submit(prompt="profiled", steps=2, width=64, height=64)
        svc.wait_status(job["job_id"], ("complete",))
        rows = profile_rows(svc)
        text = "\n".join(rows)
        for want in ("row=\"unet ", "row=\"unet.mid ", "row=\"vae.dec.up.0 ", "row=\"conv ", "row=\"attention "):
            expect(want in text, "no %s among the job_profile lines:\n%s" % (want, text), svc)
    with Service("noprofile") as svc:
        svc.wait_ready()
        job = svc.submit(prompt="not profiled", steps=1, width=64, height=64)
        svc.wait_status(job["job_id"], ("complete",))
        expect(not profile_rows(svc), "job_profile lines without SDW_PROFILE", svc)


if __name__ == "__main__":
    sdw.main([test_profile_logged])
