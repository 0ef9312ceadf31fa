# Reference curves for tests/test_survival_competing.py (cumulative incidence): survfit's
# Aalen-Johansen estimate for a multi-state Surv (survival 3.5-3), mgus2 pcm vs death.
# Run from tests/data:  Rscript cif_reference.R
# etime/event as in the survival "compete" vignette; times are months, with many ties.
library(survival)
options(digits = 17)
etime <- with(mgus2, ifelse(pstat == 0, futime, ptime))
event <- with(mgus2, ifelse(pstat == 0, 2 * death, 1))
event <- factor(event, 0:2, labels = c("censored", "pcm", "death"))
mgus2_competing <- data.frame(
  id = mgus2$id, age = mgus2$age, sex = as.character(mgus2$sex), mspike = mgus2$mspike,
  etime = etime, event = as.character(event)
)
write.csv(mgus2_competing, "cif_mgus2.csv", row.names = FALSE, na = "")

rows <- function(fit, group) {
  # pstate/std.err/lower/upper columns: (s0), pcm, death; log CI from std.err / p.
  out <- list()
  for (state in c("pcm", "death")) {
    k <- match(state, fit$states)
    out[[state]] <- data.frame(
      group = group, event = state, time = fit$time, estimate = fit$pstate[, k],
      std_error = fit$std.err[, k], conf_low = fit$lower[, k], conf_high = fit$upper[, k]
    )
  }
  do.call(rbind, out)
}
# Surv needs the event as a factor whose first level is censoring.
mgus2_competing$event <- factor(mgus2_competing$event, c("censored", "pcm", "death"))
overall <- survfit(Surv(etime, event) ~ 1, data = mgus2_competing)
by_sex <- survfit(Surv(etime, event) ~ sex, data = mgus2_competing)
tables <- list(rows(overall, "all"))
for (k in 1:2) tables[[k + 1]] <- rows(by_sex[k, ], sub("sex=", "", names(by_sex$strata)[k]))
write.csv(do.call(rbind, tables), "cif_aalen_johansen.csv", row.names = FALSE)
cat("conf.type:", overall$conf.type, "\n")
