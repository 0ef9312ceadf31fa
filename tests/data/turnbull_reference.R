# Reference curves for tests/test_survival_interval.py: survfit's Turnbull estimator
# (survival 3.5-3, survfitTurnbull) for Surv(lower, upper, type = "interval2").
# Run from tests/data:  Rscript turnbull_reference.R
# turnbull_lung_interval.csv is the interval-censored lung data built in aft_reference.R
# (30-day visit grid, exact deaths on multiples of 7 days, left-censoring as lower = NA or 0).
library(survival)
options(digits = 17)
lung_interval <- read.csv("turnbull_lung_interval.csv")
# A hand-made frame with every kind of row: left-censored before the first jump (lower NA),
# interval starting at 0, exact ties, right-censored ties and nested intervals.
small <- data.frame(
  lower = c(NA, 2, 3, 5, 5, 6, 1, 0, 4, 3, 3, 7, 2, NA, 6),
  upper = c(1, 4, 3, NA, 8, 6, 3, 2, NA, 3, NA, 9, 5, 6, 6),
  group = c("a", "a", "a", "a", "a", "a", "a", "a", "b", "b", "b", "b", "b", "b", "b")
)
write.csv(small, "turnbull_small.csv", row.names = FALSE, na = "")

curve_rows <- function(fit, dataset) {
  strata <- if (is.null(fit$strata)) rep("all", length(fit$time)) else
    rep(sub(".*=", "", names(fit$strata)), fit$strata)
  data.frame(dataset = dataset, group = strata, time = fit$time, survival = fit$surv)
}
grid_rows <- function(fit, dataset, times) {
  s <- summary(fit, times = times, extend = TRUE)
  strata <- if (is.null(s$strata)) rep("all", length(s$time)) else sub(".*=", "", s$strata)
  data.frame(dataset = dataset, group = strata, time = s$time, survival = s$surv)
}
fits <- list(
  lung = survfit(Surv(lower, upper, type = "interval2") ~ 1, data = lung_interval),
  lung_by_sex = survfit(Surv(lower, upper, type = "interval2") ~ sex, data = lung_interval),
  small = survfit(Surv(lower, upper, type = "interval2") ~ 1, data = small),
  small_by_group = survfit(Surv(lower, upper, type = "interval2") ~ group, data = small)
)
grids <- list(
  lung = c(15, 30, 45, 90, 180, 270, 365, 500, 730, 900),
  lung_by_sex = c(15, 30, 45, 90, 180, 270, 365, 500, 730, 900),
  small = c(0.5, 1, 1.5, 2, 2.5, 3, 3.5, 4, 5, 6, 7, 8.5, 10),
  small_by_group = c(0.5, 1, 1.5, 2, 2.5, 3, 3.5, 4, 5, 6, 7, 8.5, 10)
)
write.csv(do.call(rbind, lapply(names(fits), function(n) curve_rows(fits[[n]], n))),
          "turnbull_curves.csv", row.names = FALSE)
write.csv(do.call(rbind, lapply(names(fits), function(n) grid_rows(fits[[n]], n, grids[[n]]))),
          "turnbull_survival_at.csv", row.names = FALSE)
