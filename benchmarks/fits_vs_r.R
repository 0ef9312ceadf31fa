# The R side of benchmarks/fits_vs_r.py: the same fits on the same frames, timed inside R.
#
#     Rscript benchmarks/fits_vs_r.R DIR
#
# DIR holds the frames fits_vs_r.py wrote (recovery.csv, time_varying.csv, interval.csv,
# trajectories.csv) and spec.json (column names and covariates from params.yaml's fit block).
# Reading the CSVs and building factors happens before any clock starts; model.matrix for crr is
# timed, since our fit_fine_gray builds its own design matrix.
#
# Then it serves timings so that fits_vs_r.py can alternate R and Python runs (A B A B): it
# prints "ready", and for each line "MODEL LOOPS" read from stdin runs that fit LOOPS times and
# prints the elapsed seconds of the whole batch; "models" lists the fits; "quit" ends.

suppressPackageStartupMessages({
  library(survival)
  library(cmprsk)
  library(lme4)
  library(jsonlite)
})

args <- commandArgs(trailingOnly = TRUE)
dir <- args[[1]]
spec <- fromJSON(file.path(dir, "spec.json"))

# Factor levels sorted as analysis.survival.design sorts them (first sorted level = reference),
# so R fits the same dummy coding.
as_factors <- function(frame) {
  for (name in names(frame)) {
    if (is.character(frame[[name]]) || is.logical(frame[[name]])) {
      values <- as.character(frame[[name]])
      frame[[name]] <- factor(values, levels = sort(unique(values[!is.na(values)]), method = "radix"))
    }
  }
  frame
}
read_frame <- function(name) {
  as_factors(read.csv(file.path(dir, paste0(name, ".csv")), stringsAsFactors = FALSE))
}

recovery <- read_frame("recovery")
time_varying <- read_frame("time_varying")
interval <- read_frame("interval")
trajectories <- read_frame("trajectories")
grouped <- recovery[!is.na(recovery[[spec$group]]), ]
grouped_interval <- interval[!is.na(interval[[spec$group]]), ]
# interval2 in R: NA lower = left-censored, NA upper = right-censored. Our lower == 0 means
# left-censored too; survreg rejects log(0), so it becomes NA as in the Python convention.
interval$lower[!is.na(interval$lower) & interval$lower == 0] <- NA
grouped_interval$lower[!is.na(grouped_interval$lower) & grouped_interval$lower == 0] <- NA

rhs <- function(covariates) paste(covariates, collapse = " + ")
surv_formula <- function(lhs, covariates) as.formula(paste(lhs, "~", rhs(covariates)))
km_formula <- as.formula(paste("Surv(duration, event) ~", spec$group))
stratified_formula <- as.formula(
  paste("Surv(duration, event) ~", spec$group, "+ strata(", spec$stratify_logrank_by, ")")
)
cox_formula <- surv_formula("Surv(duration, event)", spec$cox_covariates)
time_varying_formula <- surv_formula("Surv(start, stop, event)", spec$time_varying_covariates)
aft_formula <- surv_formula("Surv(lower, upper, type = 'interval2')", spec$aft_covariates)
turnbull_formula <- Surv(lower, upper, type = "interval2") ~ 1
turnbull_group_formula <- as.formula(
  paste("Surv(lower, upper, type = 'interval2') ~", spec$group)
)
# The multi-state Surv wants the censoring level first.
states <- c(spec$censored, setdiff(sort(unique(as.character(recovery$event_type))), spec$censored))
grouped$state <- factor(as.character(grouped$event_type), levels = states)
cif_formula <- as.formula(paste("Surv(duration, state) ~", spec$group))
fine_gray_rows <- recovery[complete.cases(recovery[, c("duration", "event_type", spec$fine_gray_covariates)]), ]
fine_gray_design <- as.formula(paste("~", rhs(spec$fine_gray_covariates)))
mixed_formula <- as.formula(
  paste(spec$mixed_outcome, "~", spec$mixed_fixed, "+ (", sub("^~", "", spec$mixed_random), "|",
        spec$participant_id, ")")
)

fits <- list(
  kaplan_meier = function() survfit(km_formula, data = grouped),
  logrank = function() survdiff(km_formula, data = grouped),
  logrank_stratified = function() survdiff(stratified_formula, data = grouped),
  # survmean is what print(fit, rmean=) calls; summary() would also tabulate every time point.
  rmst = function() survival:::survmean(survfit(km_formula, data = grouped), rmean = spec$rmst_horizon_days),
  cox = function() coxph(cox_formula, data = recovery, ties = "efron"),
  cox_zph = local({
    fitted <- coxph(cox_formula, data = recovery, ties = "efron")
    function() cox.zph(fitted, transform = "km")
  }),
  cox_time_varying = function() coxph(time_varying_formula, data = time_varying, ties = "efron"),
  turnbull = function() survfit(turnbull_formula, data = interval),
  turnbull_by_group = function() survfit(turnbull_group_formula, data = grouped_interval),
  cumulative_incidence = function() survfit(cif_formula, data = grouped),
  fine_gray = function() {
    design <- model.matrix(fine_gray_design, data = fine_gray_rows)[, -1, drop = FALSE]
    crr(fine_gray_rows$duration, as.character(fine_gray_rows$event_type), design,
        failcode = spec$event_of_interest, cencode = spec$censored)
  },
  mixed = function() lmer(mixed_formula, data = trajectories, REML = spec$mixed_reml)
)
for (distribution in spec$aft_distributions) {
  fits[[paste0("aft_", distribution)]] <- local({
    d <- distribution
    function() survreg(aft_formula, data = interval, dist = d)
  })
}

elapsed <- function(fit, loops) {
  start <- Sys.time()
  for (i in seq_len(loops)) fit()
  as.numeric(Sys.time()) - as.numeric(start)
}

input <- file("stdin")
open(input)
cat("ready\n")
flush(stdout())
repeat {
  line <- readLines(input, n = 1)
  if (length(line) == 0 || line == "quit") break
  if (line == "models") {
    cat(paste(names(fits), collapse = " "), "\n")
  } else {
    request <- strsplit(line, " ", fixed = TRUE)[[1]]
    cat(format(elapsed(fits[[request[[1]]]], as.integer(request[[2]])), digits = 17), "\n")
  }
  flush(stdout())
}
