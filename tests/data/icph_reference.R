# References for tests/test_survival_icph.py (interval-censored PH, analysis/survival/icph.py).
#   Rscript tests/data/icph_reference.R      (run from the repository root)
# R 4.2.2, survival 3.5.3. Writes icph_*.csv beside this script.
library(survival)
out <- function(frame, name) {
  write.csv(frame, file.path("tests/data", name), row.names = FALSE)
}

# 1. Exact event times + piecewise-constant baseline == piecewise-exponential Poisson GLM.
# Weekly rows (days), a time-varying covariate `dose`, a fixed numeric `age` and a factor `arm`.
set.seed(20261130)
n <- 150
cuts <- c(0, 14, 28, 49)                      # pieces [0,14), [14,28), [28,49), [49,Inf)
rates <- c(0.004, 0.012, 0.02, 0.03)
people <- data.frame(id = sprintf("p%03d", 1:n), age = round(rnorm(n, 0, 1), 3),
                     arm = sample(c("a", "b", "c"), n, replace = TRUE),
                     follow = sample(30:90, n, replace = TRUE))
rows <- list()
for (i in 1:n) {
  weeks <- ceiling(people$follow[i] / 7)
  dose <- round(runif(weeks), 3)
  lp_fixed <- 0.5 * people$age[i] + c(a = 0, b = -0.4, c = 0.3)[people$arm[i]]
  # Walk forward day by day (fine grid) to draw an exact event time from the hazard.
  t <- 0; event_time <- NA
  threshold <- rexp(1)
  cumhaz <- 0
  for (w in 1:weeks) {
    start <- 7 * (w - 1); stop <- min(7 * w, people$follow[i])
    grid <- seq(start, stop, by = 0.01)
    piece <- findInterval(grid[-1] - 0.005, cuts)
    add <- cumsum(rates[piece] * exp(lp_fixed + 1.2 * dose[w]) * 0.01)
    if (is.na(event_time) && cumhaz + tail(add, 1) >= threshold) {
      event_time <- round(grid[-1][which(cumhaz + add >= threshold)[1]], 2)
    }
    cumhaz <- cumhaz + tail(add, 1)
    rows[[length(rows) + 1]] <- data.frame(id = people$id[i], start = start, stop = stop,
                                           dose = dose[w])
    if (!is.na(event_time)) break
  }
  people$time[i] <- if (is.na(event_time)) people$follow[i] else event_time
  people$event[i] <- as.integer(!is.na(event_time))
}
weekly <- do.call(rbind, rows)
weekly <- merge(weekly, people[, c("id", "age", "arm", "time", "event")], by = "id")
weekly <- weekly[weekly$start < weekly$time, ]
weekly$stop <- pmin(weekly$stop, weekly$time)
weekly <- weekly[order(weekly$id, weekly$start), ]
weekly$lower <- weekly$time
weekly$upper <- ifelse(weekly$event == 1, weekly$time, NA)
out(weekly[, c("id", "start", "stop", "dose", "age", "arm", "lower", "upper")],
    "icph_exact_frame.csv")
# Split every row at the cuts; the event sits on the last piece of the person's last row.
weekly$row_event <- as.integer(weekly$event == 1 & weekly$stop == weekly$time)
split <- survSplit(Surv(start, stop, row_event) ~ ., data = weekly, cut = cuts[-1],
                   episode = "piece")
split$exposure <- split$stop - split$start
pem <- glm(row_event ~ 0 + factor(piece) + dose + age + arm + offset(log(exposure)),
           family = poisson, data = split, control = glm.control(epsilon = 1e-14, maxit = 100))
s <- summary(pem)$coefficients
out(data.frame(term = rownames(s), estimate = sprintf("%.15g", s[, 1]),
               std_error = sprintf("%.15g", s[, 2])), "icph_exact_poisson.csv")

# 2. One piece + interval censoring == survreg(type = "interval2", dist = "exponential").
# Fixed covariates on weekly rows; visits every 14 +- 3 days find the event.
set.seed(20261201)
n <- 300
x <- round(rnorm(n), 3)
group <- sample(c("u", "v"), n, replace = TRUE)
rate <- 0.02 * exp(0.7 * x - 0.5 * (group == "v"))
t_true <- rexp(n, rate)
lower <- upper <- numeric(n)
for (i in 1:n) {
  visits <- cumsum(c(0, 14 + sample(-3:3, 12, replace = TRUE)))
  visits <- visits[visits <= 120]
  seen <- visits[visits >= t_true[i]]
  if (length(seen)) {
    upper[i] <- seen[1]; lower[i] <- max(visits[visits < t_true[i]])
  } else {
    upper[i] <- NA; lower[i] <- max(visits)
  }
}
people <- data.frame(id = sprintf("q%03d", 1:n), x = x, group = group, lower = lower,
                     upper = upper)
fit <- survreg(Surv(ifelse(lower == 0, NA, lower), upper, type = "interval2") ~ x + group,
               data = people, dist = "exponential",
               control = survreg.control(rel.tolerance = 1e-13, maxiter = 100))
out(people, "icph_interval_people.csv")
out(data.frame(term = names(coef(fit)), estimate = sprintf("%.15g", coef(fit)),
               std_error = sprintf("%.15g", sqrt(diag(vcov(fit)))),
               log_likelihood = sprintf("%.15g", fit$loglik[2])),
    "icph_interval_survreg.csv")
